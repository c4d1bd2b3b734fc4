"""Wall time and throughput of the training part of each epoch."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from aevae.data.batches import count_images
from aevae.engine import internals


class EpochTimer(L.Callback):
    """Logs `perf/train_epoch_s` and `perf/images_per_s` once per epoch.

    Times from the start of the epoch to the end of its last training batch, so
    the validation and checkpointing that follow are excluded. Waits for the
    device once per epoch, never per step, so the figure is true on GPUs too.
    `epoch_seconds` keeps every epoch's time for scripts.
    """

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self._images = 0

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images = 0
        self._start = self._now(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch times from here

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._images += count_images(batch)
        if internals.is_last_batch(trainer) or batch_idx + 1 >= trainer.num_training_batches:
            seconds = self._now(pl_module) - self._start
            self.epoch_seconds.append(seconds)
            images_per_s = self._images * trainer.world_size / seconds
            pl_module.log_dict({"perf/train_epoch_s": seconds, "perf/images_per_s": images_per_s})


class FirstStepClock(L.Callback):
    """Writes to `path` the wall-clock time (`time.time()`, one clock for every process) at which
    the first training batch ended, and the optimizer steps taken by then: how `aevae-bench`
    times command-to-first-step from outside the real `aevae-train` process, without a hook in
    the training path."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not self.path.exists():
            self.path.write_text(f"{time.time()} {trainer.global_step}\n")
