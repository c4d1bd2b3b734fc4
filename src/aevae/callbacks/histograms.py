"""Latent histograms every N epochs, and the learning rate once per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor

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
from aevae.sampling.latents import encode_all, kl_per_dim, posterior_all


def add_histogram(writer: Any, tag: str, values: torch.Tensor, step: int, bins: int) -> None:
    """A `bins`-bucket histogram of `values`, computed by torch.

    `SummaryWriter.add_histogram` goes through NumPy, whose BLAS threads then spin for
    ~0.1 s after its dot product, on the cores training needs: +4% on the next epoch.
    """
    values = values.detach().flatten().double().cpu()
    low, high = float(values.min()), float(values.max())
    if high > low:
        counts = torch.histc(values, bins=bins, min=low, max=high).tolist()
        limits = torch.linspace(low, high, bins + 1, dtype=torch.float64)[1:].tolist()
    else:  # one value (a dead unit): one bucket
        counts, limits = [float(len(values))], [high]
    writer.add_histogram_raw(
        tag,
        min=low,
        max=high,
        num=len(values),
        sum=float(values.sum()),
        sum_squares=float(values.square().sum()),
        bucket_limits=limits,
        bucket_counts=counts,
        global_step=step,
    )


def add_bars(writer: Any, tag: str, heights: torch.Tensor, step: int) -> None:
    """`heights[i]` as a bar over x = i, written as a histogram whose bucket i holds that much,
    so that one chart per epoch shows a per-dim quantity and the Histograms tab its history."""
    index = torch.arange(len(heights), dtype=torch.float64)
    weights = heights.double().clamp_min(0)
    writer.add_histogram_raw(
        tag,
        min=-0.5,
        max=len(heights) - 0.5,
        num=float(weights.sum()),
        sum=float((index * weights).sum()),
        sum_squares=float((index.square() * weights).sum()),
        bucket_limits=(index + 0.5).tolist(),
        bucket_counts=weights.tolist(),
        global_step=step,
    )


class LatentHistograms(TensorBoardCallback):
    """Histograms of the codes of `num_images` fixed images of `split`, every N epochs.

    - `latent/activations`: all code values together (`bins` buckets);
    - `latent/std_per_dim` and, for the VAE, `latent/kl_per_dim`: not distributions but bar
      charts drawn as histograms, one bar per latent dim (x = the dim's index) as high as the
      code's standard deviation over the images, or the dim's mean KL in nats. Dead and
      collapsed units are gaps, all dims in one chart;
    - `latent_dims/dim_NNN` with `per_dim`: one histogram per dim (a dashboard card each).
    """

    name = "histograms"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 2000,
        split: str = "val",
        seed: int = 0,
        bins: int = 64,
        per_dim: bool = False,
    ) -> None:
        super().__init__(every_n_epochs)
        self.num_images = positive_int(f"callbacks.{self.name}.num_images", num_images)
        self.split = choice(f"callbacks.{self.name}.split", split, SPLITS)
        self.bins = positive_int(f"callbacks.{self.name}.bins", bins)
        self.seed, self.per_dim = seed, bool(per_dim)
        self._images: tuple[torch.Tensor, torch.Tensor] | None = None  # and their labels

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        if not self.due(trainer) or (writer := self.writer(trainer)) is None:
            return
        if self._images is None:
            self._images = pick_images(trainer, self.split, self.num_images, self.seed, pl_module.device)
        kl = None
        with evaluating(pl_module):
            if hasattr(pl_module, "posterior"):  # a Gaussian posterior: its KL per dim too
                codes, log_var = posterior_all(pl_module, *self._images)
                kl = kl_per_dim(codes, log_var).cpu()
            else:
                codes = encode_all(pl_module, *self._images)
        codes = codes.cpu()
        step = trainer.global_step
        add_histogram(writer, "latent/activations", codes, step, self.bins)
        add_bars(writer, "latent/std_per_dim", codes.std(0), step)
        if kl is not None:
            add_bars(writer, "latent/kl_per_dim", kl, step)
        if self.per_dim:
            for dim, values in enumerate(codes.T):
                add_histogram(writer, f"latent_dims/dim_{dim:03d}", values, step, self.bins)


class LearningRateMonitor(LightningLearningRateMonitor):
    """Lightning's monitor (`lr-<Optimizer>` scalars), at the start of every N-th epoch only,
    and quiet without a logger, where Lightning's raises."""

    name = "lr_monitor"

    def __init__(self, every_n_epochs: int = 1, **kwargs: Any) -> None:
        super().__init__(logging_interval="epoch", **kwargs)
        self.every_n_epochs = positive_int(f"callbacks.{self.name}.every_n_epochs", every_n_epochs)

    def reaches(self, logger: Any) -> bool:
        return True  # Lightning's monitor logs to every logger

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        announce_skips(trainer)

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers and trainer.current_epoch % self.every_n_epochs == 0:
            super().on_train_epoch_start(trainer, *args, **kwargs)
