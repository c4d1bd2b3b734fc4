"""Latent histograms every N epochs, and the learning rate once per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor

from aevae.callbacks.latents import encode_all, has_prior, kl_per_dim
from aevae.callbacks.tensorboard import (
    SPLITS,
    TensorBoardCallback,
    announce_skips,
    choice,
    evaluating,
    pick_images,
    positive_int,
)
from aevae.models import Autoencoder


class LatentHistograms(TensorBoardCallback):
    """Histograms of the codes of `num_images` fixed images of `split`, every N epochs.

    - `latent/activations`: all code values together; `latent_dims/dim_NNN`: one per dim
      (`per_dim`), where dead or collapsed units show as a spike at one value;
    - `latent/kl_per_dim` (VAE): not a distribution but a bar chart drawn as one, a bar per
      latent dim (x = the dim's index) as high as its mean KL in nats: collapsed dims are gaps.
    """

    name = "histograms"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 5000,
        split: str = "val",
        seed: int = 0,
        per_dim: bool = True,
    ) -> None:
        super().__init__(every_n_epochs)
        self.num_images = positive_int(f"callbacks.{self.name}.num_images", num_images)
        self.split = choice(f"callbacks.{self.name}.split", split, SPLITS)
        self.seed, self.per_dim = seed, bool(per_dim)
        self._images: torch.Tensor | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        if not self.due(trainer) or (writer := self.writer(trainer)) is None:
            return
        if self._images is None:
            self._images = pick_images(trainer, self.split, self.num_images, self.seed, pl_module.device)[0]
        with evaluating(pl_module):
            codes = encode_all(pl_module, self._images).cpu()
            kl = kl_per_dim(pl_module, self._images).cpu() if has_prior(pl_module) else None
        step = trainer.global_step
        writer.add_histogram("latent/activations", codes, step)
        if self.per_dim:
            for dim, values in enumerate(codes.T):
                writer.add_histogram(f"latent_dims/dim_{dim:03d}", values, step)
        if kl is not None:
            dims = torch.arange(len(kl), dtype=torch.float64)
            weights = kl.double()
            writer.add_histogram_raw(
                "latent/kl_per_dim",
                min=-0.5,
                max=len(kl) - 0.5,
                num=float(weights.sum()),
                sum=float((dims * weights).sum()),
                sum_squares=float((dims.square() * weights).sum()),
                bucket_limits=(dims + 0.5).tolist(),
                bucket_counts=weights.tolist(),
                global_step=step,
            )


class LearningRateMonitor(LightningLearningRateMonitor):
    """Lightning's monitor (`lr-<Optimizer>` scalars), at the start of every N-th epoch only,
    and quiet without a logger, where Lightning's raises."""

    name = "lr_monitor"

    def __init__(self, every_n_epochs: int = 1, **kwargs: Any) -> None:
        super().__init__(logging_interval="epoch", **kwargs)
        self.every_n_epochs = positive_int(f"callbacks.{self.name}.every_n_epochs", every_n_epochs)

    def skips(self, trainer: L.Trainer) -> bool:
        return not trainer.loggers

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        announce_skips(trainer)

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers and trainer.current_epoch % self.every_n_epochs == 0:
            super().on_train_epoch_start(trainer, *args, **kwargs)
