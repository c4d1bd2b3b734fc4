"""Wall time and throughput of each training epoch."""

from __future__ import annotations

import time

import lightning as L
import torch


class EpochTimer(L.Callback):
    """Logs `perf/train_epoch_s` and `perf/images_per_s` once per epoch.

    Times the training part of the epoch (validation and checkpointing excluded)
    and waits for the device once per epoch, never per step, so the figure is
    true on GPUs too. `epoch_seconds` keeps every epoch's time for scripts.
    """

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self._images = 0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        self._images = 0
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._images += len(batch[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self._start
        self.epoch_seconds.append(seconds)
        images_per_s = self._images * trainer.world_size / seconds
        pl_module.log_dict({"perf/train_epoch_s": seconds, "perf/images_per_s": images_per_s})
