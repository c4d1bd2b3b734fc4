"""`aevae-train resume=SWEEP_DIR`: a killed sweep re-launches only its unfinished jobs."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from aevae.commands.summary import main as summary_main
from aevae.commands.sweeps import job_dirs, resume_command
from aevae.config import UserError
from aevae.engine.checkpointing import peek
from conftest import EXE, QUIET, REPO, SMALL_DATA, finish, read_metrics, run, run_env, start

#: 20 steps an epoch, a step checkpoint every 10; deterministic, so a resumed job can match exactly.
JOB = (
    *SMALL_DATA,
    *QUIET,
    "logger=none",
    "trainer.deterministic=true",
    "callbacks.step_checkpoint.every_n_train_steps=10",
)
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def job_with(sweep_dir: Path, override: str) -> Path | None:
    """The job dir whose overrides hold `override` (found by content, not by name)."""
    for job in job_dirs(sweep_dir) if sweep_dir.is_dir() else []:
        # Hydra writes the file while the job starts: empty until then
        if override in (yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []):
            return job
    return None


def process_with_open(path: Path, group: int) -> int | None:
    """The process of process group `group` that has `path` open: the worker running a job
    holds that job's train.log open."""
    target = str(path.resolve())
    for fds in Path("/proc").glob("[0-9]*/fd"):
        try:
            if os.getpgid(int(fds.parent.name)) == group and any(
                os.readlink(fd) == target for fd in fds.iterdir()
            ):
                return int(fds.parent.name)
        except OSError:  # gone meanwhile, or not ours
            continue
    return None


def wait_for(condition, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def files(job: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(job)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in job.rglob("*")
        if p.is_file()
    }


def test_a_killed_joblib_sweep_resumes_only_its_unfinished_job(tmp_path: Path) -> None:
    """Two jobs side by side; the long one is frozen after its first checkpoints, the short one
    finishes, then the whole sweep is SIGKILLed. `resume=` finishes the long one from its last
    checkpoint with exactly the metrics of an uninterrupted run, and does not touch the other."""
    sweep_dir, reference = tmp_path / "sweep", tmp_path / "reference"
    straight = start(EXE, "-m", "trainer.max_epochs=4", *JOB, *JOBLIB, f"hydra.sweep.dir={reference}")
    with open(tmp_path / "sweep.log", "w") as out:
        sweep = subprocess.Popen(
            [EXE, "-m", "trainer.max_epochs=1,4", *JOB, *JOBLIB, f"hydra.sweep.dir={sweep_dir}"],
            cwd=REPO,
            env=run_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the launcher's workers die with it
        )
    try:
        wait_for(
            lambda: (
                (j := job_with(sweep_dir, "trainer.max_epochs=4"))
                and (j / "checkpoints" / "last.ckpt").is_file()
            ),
            "a checkpoint of the long job",
        )
        long = job_with(sweep_dir, "trainer.max_epochs=4")
        worker = process_with_open(long / "train.log", sweep.pid)
        assert worker is not None, "no process of the sweep has the long job's train.log open"
        os.kill(worker, signal.SIGSTOP)
        wait_for(
            lambda: (j := job_with(sweep_dir, "trainer.max_epochs=1")) and (j / "metrics.json").is_file(),
            "the short job",
        )
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    short = job_with(sweep_dir, "trainer.max_epochs=1")
    assert not (long / "metrics.json").exists(), "the long job finished before it could be stopped"
    step = peek(long / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < step < 80
    before = files(short)

    resumed = run(EXE, f"resume={sweep_dir}")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in resumed.stdout + resumed.stderr  # the sweep's own launcher
    assert "resuming 1 of the 2 jobs" in resumed.stdout + resumed.stderr
    assert files(short) == before  # the finished job: the same files, the same mtimes
    assert job_dirs(sweep_dir) == sorted([short, long])  # the long job went back into its own dir
    finish(straight, "the uninterrupted long job")
    (uninterrupted,) = job_dirs(reference)
    assert read_metrics(long) == read_metrics(uninterrupted)  # exact float equality

    assert summary_main([str(sweep_dir)]) == 0
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trainer.max_epochs"], r["status"]) for r in rows] == [("1", "ok"), ("4", "ok")]
    assert "ckpt_path" not in rows[0]  # how a job was resumed is not one of the sweep's keys
    assert float(rows[1]["test/loss"]) == read_metrics(uninterrupted)["test/loss"]

    with pytest.raises(UserError, match="trainer.max_epochs is swept by this sweep"):
        resume_command(sweep_dir, ["trainer.max_epochs=2"])
    with pytest.raises(UserError, match="seed=1,2 would sweep again"):
        resume_command(sweep_dir, ["seed=1,2"])
    optuna = tmp_path / "optuna"
    optuna.mkdir()
    saved = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
    saved["hydra"]["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    (optuna / "multirun.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(
        UserError, match="only sweeps of Hydra's basic sweeper can be resumed, this one ran OptunaSweeper"
    ):
        resume_command(optuna, [])


def test_jobs_that_never_started_run_in_the_dirs_they_would_have_had(tmp_path: Path) -> None:
    """A sweep killed before its later jobs started (the basic launcher runs them one by one):
    those start from scratch under the names and numbers of the first launch."""
    sweep_dir = tmp_path / "sweep"
    first = run(
        EXE,
        "-m",
        "latent_dim=2,4",
        *JOB,
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert first.returncode == 0, first.stderr[-4000:]
    names = [d.name for d in job_dirs(sweep_dir)]
    (sweep_dir / names[0] / "metrics.json").unlink()  # the first job: killed at its epoch's end
    shutil.rmtree(sweep_dir / names[1])  # the second: never started
    resumed = run(EXE, f"resume={sweep_dir}")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert [d.name for d in job_dirs(sweep_dir)] == names
    assert all((sweep_dir / name / "metrics.json").is_file() for name in names)
