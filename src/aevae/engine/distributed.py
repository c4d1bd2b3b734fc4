"""Several processes, one run: how DDP ranks are started and how they share the work.

Lightning starts ranks 1..N-1 of `strategy=ddp` by running the script again. Under
Hydra it re-runs `sys.argv`, which inside a multirun still holds `-m` and the sweep
lists, so every child would start a sweep of its own; and it points the child at the
single-run `hydra.run.dir` pattern instead of the job's dir. `job_command` starts the
child with this job's own overrides and run dir instead. Under `torchrun` or `srun`
the ranks are started by the tool and none of this applies (pass `hydra.run.dir` so
they agree on the run dir).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

log = logging.getLogger(__name__)


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """Command and cwd for DDP rank `local_rank` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:  # a script or console entry point, e.g. aevae-train
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += list(hydra_cfg.overrides.task)  # this job's values, no sweep lists
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',  # quoted: job dirs hold '=' and ','
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # rank 0 already wrote .hydra/
    ]
    return command, get_original_cwd()


def start_children_with_job_command() -> None:
    """Make Lightning's DDP launcher use `job_command` for the child ranks it starts."""
    from aevae.engine.internals import start_ddp_children_with

    start_ddp_children_with(job_command)


def eval_shard(n: int, rank: int, world_size: int) -> range:
    """The evaluation images of one rank: every `world_size`-th, no padding, so the metrics
    summed over ranks (torchmetrics) are exactly those of one process over all images."""
    return range(rank, n, world_size)
