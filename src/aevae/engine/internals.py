"""Every reach into a library's private state, in one place.

Lightning, TensorBoard and Hydra offer no public way to do what these few functions do; each
says why it needs the private name. `tests/test_internals.py` holds one test per function that
fails loudly when the library moves or renames what it uses, and pyproject.toml pins the
versions they pass on (lightning<2.7, hydra-core<1.4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# -- Lightning ---------------------------------------------------------------------------


def count_optimizer_steps(trainer: Any, n: int) -> None:
    """Advance the counters behind `trainer.global_step` and the logging step by `n` updates.

    Lightning counts one optimizer step per `LightningOptimizer.step()` call and one logging
    step per batch; a chunk of K plain PyTorch steps in one `training_step` (aevae.chunked)
    makes neither call K times. These two counters are all Lightning reads for `max_steps`,
    checkpoint intervals and logger steps, and both are saved in checkpoints.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    epoch_loop.manual_optimization.optim_step_progress.increment_by(n)
    epoch_loop._batches_that_stepped += n - 1  # Lightning adds one itself after the call


def batches_started(trainer: Any) -> int:
    """Training batches (chunks) of this epoch started so far, the current one included.

    `batch_idx` restarts at 0 when a run resumes mid-epoch (a new iterator); this counter is
    restored from the checkpoint, so it counts as an uninterrupted run does.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def batches_processed(trainer: Any) -> int:
    """Training batches (chunks) of this epoch finished: where a resumed epoch goes on."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def is_last_batch(trainer: Any) -> bool:
    """Whether the training batch now ending is the epoch's last (also when the length is unknown)."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def every_n_train_steps(callback: Any) -> int:
    """A checkpoint callback's step interval: public on aevae's StepCheckpoint, private on
    Lightning's ModelCheckpoint (which has no public read of its own argument)."""
    return getattr(callback, "every_n_train_steps", None) or getattr(callback, "_every_n_train_steps", 0) or 0


def start_ddp_children_with(job_command: Callable[[int], tuple[Sequence[str], str]]) -> None:
    """Make Lightning's DDP launcher start ranks 1..N-1 with `job_command(local_rank)`.

    Under Hydra it re-runs `sys.argv`, which inside a multirun still holds `-m` and the sweep
    lists (aevae.engine.distributed says why that fails); the command it uses is this module-level
    function of its launcher, with no setting of its own.
    """
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = job_command


# -- TensorBoard ---------------------------------------------------------------------------


def tensorboard_file_writer(writer: Any) -> Any:
    """The event-file writer behind a `SummaryWriter`: `add_summary` of a ready protobuf is the
    only way to log an already encoded PNG and the HParams session plugin's summaries."""
    return writer._get_file_writer()


# -- Hydra ---------------------------------------------------------------------------------


def basic_sweeper() -> type:
    """Hydra's basic sweeper class (not exported): resuming a sweep lists its jobs exactly as
    the sweep that made them did."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


#: Its import path, as `hydra.sweeper._target_` names it in a sweep's multirun.yaml.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@contextlib.contextmanager
def hydra_config_as(config: Any) -> Iterator[None]:
    """`${hydra:...}` resolves against `config` inside, as Hydra's own job runner sets it (a
    job dir's name is computed before the job runs); the previous config afterwards."""
    from hydra.core.hydra_config import HydraConfig

    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = previous
