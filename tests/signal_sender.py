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
        self.step, self.signum, self.rank, self.times = step, getattr(signal_module, f"SIG{signal}"), rank, times

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
