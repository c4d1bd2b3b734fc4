"""A test-only callback (importable by `aevae-train` runs the tests start with this folder on
PYTHONPATH): the run sends itself a signal while a chosen optimizer step runs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
from torch import Tensor


class SignalAt(L.Callback):
    """On rank `rank`, send `signal` (a name: TERM, INT, USR1) `times` times to this process
    during optimizer step `step` (counted from 1 over the whole run), so the run stops after it.
    A run resumed at or after that step sends nothing."""

    def __init__(self, step: int, signal: str, rank: int = 0, times: int = 1) -> None:
        self.step, self.rank, self.times = step, rank, times
        self.signum = getattr(signal_module, f"SIG{signal}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != self.rank or trainer.global_step >= self.step:
            return
        steps, batch_terms = trainer.global_step, pl_module.batch_terms

        def counting(batch: Sequence[Tensor]) -> Any:
            nonlocal steps
            if pl_module.training:  # not validation
                steps += 1
                if steps == self.step:
                    for _ in range(self.times):
                        os.kill(os.getpid(), self.signum)
                        time.sleep(0.05)  # handled before the next one is sent
            return batch_terms(batch)

        pl_module.batch_terms = counting


signal_module = signal


class ScancelAt(L.Callback):
    """Under Slurm, at the end of the chunk that reaches optimizer step `step`, ask Slurm to send
    this job `signal` (`scancel --signal`), and wait until it arrived, so it lands mid-run."""

    def __init__(self, step: int, signal: str = "USR1") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step or trainer.global_rank != 0:
            return
        import subprocess

        from aevae.engine.signals import StopOnSignal

        stopper = next(c for c in trainer.callbacks if isinstance(c, StopOnSignal))
        subprocess.run(["scancel", f"--signal={self.signal}", os.environ["SLURM_JOB_ID"]], check=True)
        deadline = time.monotonic() + 60
        while not stopper.requested() and time.monotonic() < deadline:
            time.sleep(0.05)


class SignalInTest(L.Callback):
    """Send `signal` to this process when the first test batch starts (once per process)."""

    def __init__(self, signal: str) -> None:
        self.signum = getattr(signal_module, f"SIG{signal}")

    def on_test_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_rank == 0 and self.signum:
            os.kill(os.getpid(), self.signum)
            self.signum = 0
