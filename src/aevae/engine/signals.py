"""Signals end a run honestly: stop at an optimizer step, checkpoint it, say so, exit 128 + N.

SIGTERM (`kill`, a scheduler), SIGINT (Ctrl-C) and SIGUSR1 (what Slurm sends before a time
limit with `--signal=USR1@<s>`, or `scancel --signal=USR1`) set a flag. The chunked training
loop (`aevae.chunked`) reads it between optimizer steps, also inside a chunk, and raises
`Stopped` after the current step; `StopOnSignal.on_exception` then writes `last.ckpt` of
exactly that step, with all the state a resume needs. Under DDP the flag rides on the
all-reduce every chunk already makes, so all ranks stop at the end of the same chunk. A
signal after the last step, or during the test phase, stops the run there (training is
complete and checkpointed). A second Ctrl-C quits at once.

Under Slurm, SIGUSR1 also requeues the job (`scontrol requeue`), and the requeued job, run
with the same command line, finds its run dir and continues from that checkpoint. In a job of
submitit's Slurm executor its preemption signal (USR2) stops the run the same way and is then
handed to submitit's handler, which requeues the job.

Lightning has its own SIGTERM handling (a flag that makes its loops raise `SIGTERMException`,
a `SystemExit` that exits 0, without a checkpoint, and under DDP a broadcast from inside the
signal handler that would interleave with the per-step gradient all-reduce of
`aevae.chunked`) and, under Slurm, a SIGUSR1 handler that saves an `hpc_ckpt` at whatever
point the signal lands and requeues. Installed before `fit`, these handlers make Lightning
leave SIGUSR1 alone (it installs its Slurm handler only where none is set); SIGTERM, which
Lightning wraps at the start of every `fit` and `test`, is taken back when the sanity check,
training or testing starts. Lightning puts back the handlers it found when it ends, and
`StopOnSignal.installed` restores the ones before the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
#: The signal after which a Slurm job requeues itself (Lightning's default requeue signal too).
REQUEUE_SIGNAL = signal.SIGUSR1


class Stopped(Exception):
    """Training stopped on a signal at an optimizer-step boundary (`step` updates applied)."""

    def __init__(self, signum: int, step: int, total: int | None = None, checkpointed: bool = True) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.total, self.checkpointed = signum, step, total, checkpointed

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process a signal ended

    def message(self, run_dir: Path, requeued: str | None = None) -> str:
        of = f" of {self.total}" if self.total else ""
        unsaved = not self.checkpointed and not (self.total and self.step >= self.total)
        where = " (not checkpointed: a resume repeats the steps since the last checkpoint)" if unsaved else ""
        then = requeued or f"continue with: aevae-train resume={run_dir}"
        return f"stopped by {signal.Signals(self.signum).name} at step {self.step}{of}{where}; {then}"


class StopOnSignal(L.Callback):
    """Turns SIGTERM, SIGINT and SIGUSR1 into a checkpointed stop at the next optimizer step.

    `requested()` is what the training loop polls (a Python attribute: no device sync).
    """

    def __init__(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.signum = 0
        self.trainer: L.Trainer | None = None
        self.total: int | None = None  # optimizer steps of the whole run, known once training starts
        self._before: dict[int, Any] = {}

    def requested(self) -> int:
        """The first stop signal received, 0 if none."""
        return self.signum

    # -- the handlers ------------------------------------------------------------------
    @contextlib.contextmanager
    def installed(self, trainer: L.Trainer) -> Iterator[StopOnSignal]:
        """Handle the stop signals while the block runs (fit and test), then restore the old handlers.
        A SIGTERM Lightning caught before `_take_back` (its `SIGTERMException` exits 0) stops the
        run as honestly as any other."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        main = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
        self._before = {s: signal.signal(s, self._handle) for s in stop_signals()} if main else {}
        try:
            yield self
        except SIGTERMException:
            raise Stopped(signal.SIGTERM, trainer.global_step, self.total, checkpointed=False) from None
        finally:
            for s, handler in self._before.items():
                signal.signal(s, handler)

    def _take_back(self) -> None:
        """Lightning wraps SIGTERM at the start of `fit`/`test`: make it ours again (see the module doc)."""
        if self._before and threading.current_thread() is threading.main_thread():
            for s in self._before:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum == signal.SIGINT and signum == signal.SIGINT:  # Ctrl-C twice
            self._quit_now()
        if not self.signum:
            self.signum = signum
            log.warning(
                "received %s: stopping after the current optimizer step (Ctrl-C again: quit now)", name
            )
        else:
            log.info("received %s again: already stopping", name)

    def _quit_now(self) -> None:
        """A second Ctrl-C: no checkpoint of this step, no waiting for anything, child ranks too."""
        note = _last_checkpoint_note(self.checkpoint)
        line = f"aevae-train: interrupted again: quit at once, without a checkpoint; {note}"
        os.write(2, f"{line}\n".encode())  # not print: the handler may interrupt a write to stderr
        launcher = self.trainer.strategy.launcher if self.trainer is not None else None
        if launcher is not None:  # DDP ranks this process started
            launcher.kill(signal.SIGKILL)
        os._exit(128 + signal.SIGINT)

    # -- Lightning hooks ---------------------------------------------------------------
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trainer = trainer
        self._take_back()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trainer, self.total = trainer, total_steps(trainer)
        self._take_back()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_back()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Checkpoint the step the loop stopped at (all ranks call this together: the save syncs them)."""
        if isinstance(exception, Stopped) and exception.checkpointed:
            exception.total = self.total
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # all state: it resumes the run
            log.info("checkpoint of step %d: %s", exception.step, self.checkpoint)

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.raise_if_requested(trainer)  # training is over: its checkpoint is there

    def raise_if_requested(self, trainer: L.Trainer) -> None:
        """Outside the training loop (after fit, during test): stop here, saying so; under DDP every
        rank stops when any got a signal (in the loop the per-chunk all-reduce agrees on it)."""
        signum = self.signum
        if trainer.world_size > 1:
            import torch

            flag = torch.tensor(signum, device=trainer.strategy.root_device)
            signum = int(trainer.strategy.reduce(flag, reduce_op=torch.distributed.ReduceOp.MAX))
        if signum:
            raise Stopped(signum, trainer.global_step, self.total, checkpointed=False)


def stop_signals() -> tuple[int, ...]:
    """SIGTERM, SIGINT, SIGUSR1; in a job of submitit's Slurm executor its preemption signal
    instead of SIGTERM, which submitit ignores on purpose (a preemption may send it first)."""
    if sig := submitit_signal():
        return (*(s for s in STOP_SIGNALS if s != signal.SIGTERM), sig)
    return STOP_SIGNALS


def submitit_signal() -> int | None:
    """The signal submitit's Slurm jobs get before their time limit (`--signal=USR2@<s>`), then
    requeued by submitit's own handler; None outside such a job."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def total_steps(trainer: L.Trainer) -> int | None:
    """Optimizer steps the run would take in all (None: unbounded)."""
    loader = trainer.train_dataloader
    per_epoch = None
    if loader is not None and isinstance(trainer.num_training_batches, int):
        per_epoch = min(trainer.num_training_batches * loader.steps_per_chunk, loader.num_batches)
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    total = per_epoch * epochs if per_epoch and epochs else None
    if trainer.max_steps >= 0:
        total = min(total, trainer.max_steps) if total else trainer.max_steps
    return total


def _last_checkpoint_note(checkpoint: Path) -> str:
    if not checkpoint.is_file():
        return "no checkpoint was saved before"
    return f"continue from the last checkpoint with: aevae-train resume={checkpoint.parent.parent}"


# -- Slurm: requeue on SIGUSR1, and find the run again after the requeue ----------------
def slurm_job_id() -> str | None:
    """This Slurm job's id (`<array job>_<task>` for an array task), None outside Slurm."""
    if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def _marker(job_id: str) -> Path:
    """Where a requeued job finds the run dir of its earlier start."""
    from aevae.config import cache_dir

    return cache_dir() / "slurm-requeued" / job_id


def requeue(stop: Stopped, run_dir: Path) -> str | None:
    """Under Slurm, requeue this job after SIGUSR1 (rank 0 only); what to tell the user, or None."""
    job = slurm_job_id()
    if job is not None and stop.signum == submitit_signal():
        return f"submitit requeues Slurm job {job}, which continues from this step in {run_dir}"
    if job is None or stop.signum != REQUEUE_SIGNAL or not stop.checkpointed:
        return None
    if int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))) != 0:
        return f"Slurm job {job} is requeued by rank 0"
    marker = _marker(job)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{Path(run_dir).resolve()}\n")
    # `scontrol requeue` makes Slurm send this job SIGTERM: let it not cut short the one line,
    # error.txt and the exit status that follow (as Lightning's own requeue handler does)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        failed = done.returncode and (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired) as err:
        failed = str(err)
    if failed:
        marker.unlink(missing_ok=True)
        return f"requeueing Slurm job {job} failed ({failed}); continue with: aevae-train resume={run_dir}"
    log.info("requeued Slurm job %s", job)
    return f"Slurm job {job} is requeued and continues from this step in {run_dir}"


def pass_on(stop: Stopped) -> None:
    """After the step checkpoint, hand submitit's preemption signal to submitit's handler (put
    back when training ended), which pickles the job again, requeues it and exits."""
    if stop.signum == submitit_signal() and callable(handler := signal.getsignal(stop.signum)):
        handler(stop.signum, None)


def requeued_run_dir() -> str | None:
    """In a Slurm job that requeued itself, the run dir its earlier start wrote (else None)."""
    job = slurm_job_id()
    if job is None or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    marker = _marker(job)
    return marker.read_text().strip() if marker.is_file() else None


def continue_requeued(run_dir: str | Path) -> str | None:
    """ "last" (as `ckpt_path=last`) in a requeued Slurm job whose run dir holds a last.ckpt: a
    fixed `hydra.run.dir`, a job dir of the submitit launcher, or one found by `requeued_run_dir`."""
    from aevae.engine.checkpointing import LAST

    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    if not (last := Path(run_dir) / "checkpoints" / LAST).is_file():
        return None
    log.info("requeued Slurm job: continuing from %s", last)
    return "last"


def forget_requeue() -> None:
    """The requeued job finished: its marker has done its work."""
    if (job := slurm_job_id()) is not None and os.environ.get("SLURM_RESTART_COUNT"):
        _marker(job).unlink(missing_ok=True)
