"""Signals end a run honestly: a step checkpoint, one line, exit 128 + N, and `resume=` loses nothing."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aevae.engine.checkpointing import peek
from conftest import EXE, QUIET, REPO, SMALL_DATA, read_metrics, run, run_env
from test_distributed import DDP as DDP_RANKS
from test_distributed import SMALL, rank_metrics, submitit_sweep

TESTS = Path(__file__).resolve().parent
#: 2 epochs of 20 steps, 10 steps a chunk: step 10 ends the first chunk, 13 and 27 are inside one.
RUN = (
    *SMALL_DATA,
    *QUIET,
    "trainer.max_epochs=2",
    "steps_per_chunk=10",
    "trainer.log_every_n_steps=10",
    "trainer.deterministic=true",
    "logger=none",
)
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "steps_per_chunk=5")


def train(*overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`aevae-train` with this folder importable, for the `signal_sender.SignalAt` callback."""
    env = {**run_env(), "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run([EXE, *overrides], env=env, capture_output=True, text=True, timeout=900)


def signal_at(step: int, name: str, times: int = 1) -> tuple[str, ...]:
    """Overrides that make the run signal itself while optimizer step `step` runs."""
    return (
        "+callbacks.signal_at._target_=signal_sender.SignalAt",
        f"+callbacks.signal_at.step={step}",
        f"+callbacks.signal_at.signal={name}",
        f"+callbacks.signal_at.times={times}",
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    proc = train(*RUN, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_metrics(run_dir)


def assert_stopped(
    proc: subprocess.CompletedProcess, run_dir: Path, name: str, step: int, total: int
) -> None:
    """Exit 128 + N, the one line on stderr and in error.txt, last.ckpt of exactly that step, no metrics."""
    signum = getattr(signal, f"SIG{name}")
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    line = f"stopped by SIG{name} at step {step} of {total}; continue with: aevae-train resume={run_dir}"
    assert f"aevae-train: {line}\n" in proc.stderr
    assert (run_dir / "error.txt").read_text() == line + "\n"
    assert peek(run_dir / "checkpoints" / "last.ckpt")["global_step"] == step
    assert not (run_dir / "metrics.json").exists()  # no test phase


@pytest.mark.parametrize(
    ("name", "step"),
    [("TERM", 13), ("INT", 10), ("USR1", 27)],
    ids=["sigterm-inside-a-chunk", "sigint-after-the-first-chunk", "sigusr1-inside-a-chunk-epoch-2"],
)
def test_a_signal_stops_at_that_step_and_resume_finishes_exactly(
    name: str, step: int, uninterrupted: dict[str, float], tmp_path: Path
) -> None:
    proc = train(*RUN, *signal_at(step, name), f"hydra.run.dir={tmp_path}")
    assert_stopped(proc, tmp_path, name, step, 40)
    resumed = train(f"resume={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(tmp_path) == uninterrupted  # bit for bit
    assert not (tmp_path / "error.txt").exists()


def test_a_signal_in_the_test_phase_is_no_success(uninterrupted: dict[str, float], tmp_path: Path) -> None:
    """Training is complete (its last.ckpt is there); the test is cut short: no metrics.json,
    exit 143; resuming the finished run only tests it."""
    in_test = (
        "+callbacks.signal_in_test._target_=signal_sender.SignalInTest",
        "+callbacks.signal_in_test.signal=TERM",
    )
    proc = train(*RUN, *in_test, f"hydra.run.dir={tmp_path}")
    assert_stopped(proc, tmp_path, "TERM", 40, 40)
    resumed = train(f"resume={tmp_path}", "~callbacks.signal_in_test")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(tmp_path) == uninterrupted


def test_a_second_ctrl_c_quits_at_once(tmp_path: Path) -> None:
    proc = train(*RUN, *signal_at(13, "INT", times=2), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    quit_line = "aevae-train: interrupted again: quit at once, without a checkpoint; no checkpoint was saved"
    assert quit_line in proc.stderr
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "metrics.json").exists()


def test_sigusr1_under_slurm_without_a_controller_says_the_requeue_failed(tmp_path: Path) -> None:
    """Lightning's Slurm environment is detected (its SIGUSR1 handler would save hpc_ckpt_1.ckpt
    and requeue); ours takes the signal instead, and a failed `scontrol requeue` is reported."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "aevae", "SLURM_PROCID": "0"}
    proc = train(*RUN, *signal_at(13, "USR1"), f"hydra.run.dir={tmp_path}", env=env)
    assert proc.returncode == 128 + signal.SIGUSR1, proc.stderr[-3000:]
    assert "SLURM auto-requeueing enabled" in (tmp_path / "train.log").read_text()  # Lightning saw Slurm
    assert "stopped by SIGUSR1 at step 13 of 40; requeueing Slurm job 4242 failed (" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"; continue with: aevae-train resume={tmp_path}")
    assert peek(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 13
    assert not list(tmp_path.rglob("hpc_ckpt*"))


def test_ddp_ranks_stop_at_the_same_step_and_resume(tmp_path: Path) -> None:
    """Rank 0 alone is signalled during step 12; both ranks stop at the end of that chunk (15)."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    reference = subprocess.Popen(
        [EXE, *RUN, *DDP, f"hydra.run.dir={straight}"],
        env={**run_env(), "PYTHONPATH": str(TESTS)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = train(*RUN, *DDP, *signal_at(12, "TERM"), f"hydra.run.dir={stopped}")
    assert_stopped(proc, stopped, "TERM", 15, 20)
    rank_1 = (stopped / "train_ddp_process_1.log").read_text()
    assert f"stopped by SIGTERM at step 15 of 20; continue with: aevae-train resume={stopped}" in rank_1
    resumed = train(f"resume={stopped}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-3000:]
    assert read_metrics(stopped) == read_metrics(straight)


@pytest.mark.usefixtures("slurm")
def test_slurm_job_sent_usr1_requeues_and_finishes_exactly(
    uninterrupted: dict[str, float], tmp_path: Path
) -> None:
    """`scancel --signal=USR1` at step 10: the job checkpoints, requeues itself, and the requeued
    job (same command, default run dir) finds its run dir and finishes with the same metrics."""
    scancel_at = ("+callbacks.scancel_at._target_=signal_sender.ScancelAt", "+callbacks.scancel_at.step=10")
    command = [EXE, *RUN, *scancel_at]
    sbatch = ["sbatch", "--parsable", f"--chdir={tmp_path}", f"--output={tmp_path}/slurm-%j.out"]
    env = {**run_env(), "PYTHONPATH": str(TESTS)}
    job = subprocess.run([*sbatch, "--wrap", shlex.join(["srun", *command])], env=env, **TEXT).stdout.strip()
    deadline = time.monotonic() + 600
    while (state := job_state(job))["JobState"] not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", state
    [run_dir] = list((tmp_path / "outputs" / "runs").glob("*/*"))  # one run, continued in its own dir
    stopped = f"stopped by SIGUSR1 at step 10 of 40; Slurm job {job} is requeued and continues from this step"
    assert f"{stopped} in {run_dir.resolve()}" in (run_dir / "train.log").read_text()
    assert read_metrics(run_dir) == uninterrupted, (tmp_path / f"slurm-{job}.out").read_text()[-3000:]
    assert not (run_dir / "error.txt").exists()


TEXT: dict[str, Any] = {"capture_output": True, "text": True, "check": True, "timeout": 60}


FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE")


def job_state(job: str) -> dict[str, str]:
    """The job's fields in `scontrol show job` (JobState '' while Slurm does not answer). Slurm
    holds a requeued job for two minutes before it may start again; here it starts as soon as
    the node has finished the job's earlier start (a job started on a completing node fails)."""
    proc = subprocess.run(["scontrol", "-o", "show", "job", job], **{**TEXT, "check": False})
    fields = dict(field.split("=", 1) for field in proc.stdout.split() if "=" in field)
    if fields.get("JobState") == "PENDING" and fields.get("Reason") == "BeginTime":
        node = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%T"], **{**TEXT, "check": False})
        if node.stdout.strip() and "comp" not in node.stdout:
            subprocess.run(
                ["scontrol", "update", f"jobid={job}", "StartTime=now"], **{**TEXT, "check": False}
            )
    return {"JobState": "", **fields}


@pytest.mark.usefixtures("slurm")
def test_submitit_job_preempted_is_requeued_by_submitit_and_finishes_exactly(
    uninterrupted: dict[str, float], tmp_path: Path
) -> None:
    """submitit's preemption signal (USR2) in a job of the submitit_slurm launcher: the step
    checkpoint, then submitit's own requeue; the requeued job continues from that checkpoint."""
    launcher = (
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.mem_gb=null",
        "hydra.launcher.timeout_min=60",  # not near its limit: submitit requeues it as preempted
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=job",
    )
    scancel_at = ("+callbacks.scancel_at._target_=signal_sender.ScancelAt", "+callbacks.scancel_at.step=10")
    sweep = subprocess.Popen(
        [EXE, "-m", *launcher, *RUN, *scancel_at, "+callbacks.scancel_at.signal=USR2"],
        env={**run_env(), "PYTHONPATH": str(TESTS)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while sweep.poll() is None and time.monotonic() < deadline:
        for job in (tmp_path / ".submitit").glob("[0-9]*"):
            job_state(job.name)
        time.sleep(0.5)
    assert sweep.wait(timeout=60) == 0, sweep.stderr.read()[-3000:]
    log = (tmp_path / "job" / "train.log").read_text()
    assert "stopped by SIGUSR2 at step 10 of 40; submitit requeues Slurm job" in log
    assert f"requeued Slurm job: continuing from {tmp_path}/job/checkpoints/last.ckpt" in log
    assert read_metrics(tmp_path / "job") == uninterrupted


# -- the local Slurm cluster: every test that needs it is here (one xdist worker) ----------
@pytest.fixture(scope="module")
def slurm() -> Iterator[None]:
    """A one-node Slurm cluster on localhost, started by the project's own script (and
    stopped after these tests, unless it was running before). Every test that uses it is in
    this file, which pytest-xdist (`--dist loadfile`) runs on one worker."""
    script = REPO / "scripts" / "slurm_local.sh"
    was_running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    proc = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"the Slurm daemons could not start here: {proc.stderr.strip()}")
    yield
    if not was_running:
        subprocess.run([str(script), "stop"], capture_output=True, timeout=60)


def test_slurm_sweep_through_submitit(slurm: None, tmp_path: Path) -> None:
    submitit_sweep(
        tmp_path,
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.mem_gb=null",
    )


def test_slurm_srun_two_task_ddp(slurm: None, tmp_path: Path) -> None:
    """Slurm starts both ranks (Lightning asks for --ntasks-per-node, not -n); they share one run dir."""
    srun = [shutil.which("srun"), "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]
    proc = run(*srun, EXE, *DDP_RANKS, *SMALL, "logger=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = rank_metrics(tmp_path)
    assert set(metrics) == {0, 1} and metrics[0] == metrics[1]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics[0]
    assert "global batch 128 = 64 per process x 2 process(es)" in (tmp_path / "train.log").read_text()
