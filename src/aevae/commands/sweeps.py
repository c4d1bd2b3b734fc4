"""Resuming a killed or preempted sweep: `aevae-train resume=SWEEP_DIR`.

A Hydra multirun leaves `multirun.yaml` in its sweep dir (the command's overrides,
its launcher) and, in every job dir it started, `.hydra/overrides.yaml` (that job's
values). `resume_command` turns them back into the sweep's own command line, with
Hydra's basic sweeper swapped for the `aevae_resume` one
(`hydra_plugins/aevae_resume`): it enumerates the same jobs, leaves those that
finished (a `metrics.json`) alone and hands the others to the sweep's launcher
(`relaunches`), each into its own job dir and from its own `checkpoints/last.ckpt`.

Jobs are matched to their dirs by content (the values of the swept keys in each
`.hydra/overrides.yaml`), never by the dir names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from aevae.config import PER_LAUNCH_KEYS, UserError, quoted
from aevae.engine import internals

SWEEP_FILE = "multirun.yaml"
METRICS = "metrics.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
#: The only sweeper whose jobs can be enumerated again (Optuna's trials are drawn by its study).
BASIC_SWEEPER = internals.BASIC_SWEEPER
#: Hydra overrides of the first launch that the resumed one replaces.
_REPLACED = ("hydra.sweep.dir", "hydra/sweeper")


def override_key(override: str) -> str:
    """`model.lr` of `+model.lr=1`, `hydra/launcher` of `hydra/launcher=joblib`."""
    return override.split("=", 1)[0].lstrip("+~")


def is_sweep_dir(path: str | Path) -> bool:
    """Whether `path` is the dir of a Hydra multirun (it holds multirun.yaml, and is no job dir)."""
    path = Path(path)
    return (path / SWEEP_FILE).is_file() and not (path / ".hydra" / "overrides.yaml").is_file()


def saved_overrides(sweep_dir: str | Path) -> tuple[list[str], list[str]]:
    """The task and the hydra overrides the sweep in `sweep_dir` was started with."""
    sweep_dir = Path(sweep_dir)
    try:
        hydra = yaml.safe_load((sweep_dir / SWEEP_FILE).read_text())["hydra"]
        sweeper, overrides = hydra["sweeper"]["_target_"], hydra["overrides"]
        task, launch = list(overrides["task"] or []), list(overrides["hydra"] or [])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise UserError(f"resume={sweep_dir}: {SWEEP_FILE} there is not readable ({err})") from None
    if sweeper != BASIC_SWEEPER:  # a resumed launch leaves multirun.yaml as the first one wrote it
        raise UserError(
            f"resume={sweep_dir}: only sweeps of Hydra's basic sweeper can be resumed, this one ran "
            f"{sweeper.rsplit('.', 1)[-1]} (its jobs are chosen as it goes); start a new sweep instead"
        )
    return task, launch


def resume_command(sweep_dir: str | Path, extra: list[str]) -> list[str]:
    """The `aevae-train` arguments that resume the sweep in `sweep_dir`, with `extra` overrides
    for every re-launched job (e.g. `hydra.launcher.n_jobs=1`, `trainer.max_epochs=20`)."""
    task, launch = saved_overrides(sweep_dir)
    swept = swept_keys(task)
    for override in extra:
        key = override_key(override)
        if key in swept:
            raise UserError(
                f"resume={sweep_dir}: {key} is swept by this sweep and each job keeps its own value; "
                f"drop {override}"
            )
        if swept_keys([override]):
            raise UserError(
                f"resume={sweep_dir} re-launches the sweep's own jobs; {override} would sweep again: "
                "give one value"
            )
    kept = [o for o in launch if override_key(o) not in _REPLACED]
    return [
        "-m",
        *kept,
        *task,
        *extra,
        f"hydra.sweep.dir={quoted(str(sweep_dir))}",
        "hydra/sweeper=aevae_resume",
    ]


def swept_keys(overrides: list[str]) -> set[str]:
    """The keys that `overrides` sweep over (`latent_dim=2,8`, `seed=range(3)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {
        o.get_key_element()
        for o in OverridesParser.create().parse_overrides(overrides)
        if o.is_sweep_override()
    }


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs the sweep has started (each holds .hydra/overrides.yaml)."""
    return sorted(d for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").is_file())


def _identity(overrides: list[str], swept: set[str]) -> tuple[str, ...]:
    """What tells a job from the others: its overrides of the swept keys."""
    return tuple(sorted(o for o in overrides if override_key(o) in swept))


def relaunches(
    sweep_dir: Path,
    jobs: list[list[str]],
    extra: list[str],
    new_subdir: Callable[[int, list[str]], str],
) -> list[list[str]]:
    """The overrides of every job in `jobs` (all of the sweep's, in job order) that did not finish.

    A started job goes back into its own dir (a per-job `hydra.sweep.subdir`: the launcher
    numbers the jobs of this launch from 0, and the dir name would follow that number) and
    continues from its `checkpoints/last.ckpt` where it has one, else starts afresh there. A
    job that never started gets the dir it would have had, `new_subdir(job number, overrides)`.
    """
    swept = _differing_keys(jobs)
    started: dict[tuple[str, ...], list[Path]] = {}
    for job_dir in job_dirs(sweep_dir):
        saved = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
        started.setdefault(_identity(saved, swept), []).append(job_dir)
    replaced = {override_key(o) for o in extra}
    todo = []
    for num, job in enumerate(jobs):
        overrides = [o for o in job if override_key(o) not in replaced] + list(extra)
        own = started.get(_identity(job, swept)) or [None]
        job_dir = own.pop(0)
        if job_dir is not None and (job_dir / METRICS).is_file():
            continue  # finished: not touched
        if job_dir is None:
            subdir = new_subdir(num, list(job))  # the name of the first launch, without the extras
        else:
            subdir = job_dir.name
            if (job_dir / LAST_CHECKPOINT).is_file():
                overrides = [o for o in overrides if override_key(o) not in PER_LAUNCH_KEYS]
                overrides.append(f"ckpt_path={quoted(str(job_dir / LAST_CHECKPOINT))}")
        todo.append([*overrides, f"hydra.sweep.subdir={quoted(subdir)}"])
    return todo


def _differing_keys(jobs: list[list[str]]) -> set[str]:
    """The keys whose override differs between `jobs`: what the sweep varies."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            values.setdefault(override_key(override), set()).add(override)
    return {key for key, seen in values.items() if len(seen) > 1}
