"""What every autoencoder shares: networks, likelihood, evaluation metrics.

A subclass only says how to encode an image to a point code and which
per-image loss terms it trains on (`terms`, which must include "loss").
On corrupted data (`data.noise`) the terms score the reconstruction of the
clean target from the noisy input: a denoising autoencoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchmetrics
from torch import Tensor, nn

from aevae.losses import ReconstructionLoss, bits_per_dim, pixel_mse
from aevae.metrics import ActiveUnits
from aevae.models.module import Model


def terms_args(batch: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """What `terms` takes from a batch `(inputs, labels[, clean])`: the inputs, and the clean
    images of corrupted data as the target."""
    return (batch[0],) if len(batch) < 3 else (batch[0], batch[2])


class Autoencoder(Model):
    """Base LightningModule for AE-style models.

    Args:
        latent_dim: size of the code z.
        net: factory taking `image_shape` and `hidden_dims` (e.g. `nets.MLP`), whose
            `.encoder(n)`/`.decoder(latent_dim, out_channels)` build the two halves.
        likelihood: a :mod:`aevae.losses` module (the `loss` config group).
        optimizer: partial optimizer, called with the parameters and `lr`.
        scheduler: partial LR scheduler, called with the optimizer, stepped once per epoch.
        hidden_dims: widths of the hidden layers, encoder order.
        lr: learning rate.
        image_shape: (C, H, W) of the data.
    """

    #: The encoder emits `latent_dim * code_factor` features (VAE: mean and log-variance).
    code_factor = 1

    def __init__(
        self,
        latent_dim: int,
        net: Callable[..., Any],
        likelihood: ReconstructionLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        hidden_dims: Sequence[int] = (128,),
        lr: float = 1e-3,
        image_shape: Sequence[int] = (1, 28, 28),
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        metrics = dict.fromkeys((*self.term_names, "mse", "bce"), torchmetrics.MeanMetric)
        if "neg_elbo" in self.term_names:  # a likelihood model: its NLL bound in bits/dim too
            metrics["bits_per_dim"] = torchmetrics.MeanMetric
        metrics["active_units"] = lambda: ActiveUnits(int(latent_dim))
        super().__init__(optimizer, lr, metrics, scheduler)
        self.save_hyperparameters(ignore=["net", "likelihood", "optimizer", "scheduler"], logger=False)
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(d) for d in image_shape)
        nets = net(image_shape=self.image_shape, hidden_dims=hidden_dims)
        self.encoder: nn.Module = nets.encoder(self.latent_dim * self.code_factor)
        # as many maps per pixel as the likelihood has parameters (the logistic's mean and scale)
        self.decoder: nn.Module = nets.decoder(self.latent_dim, likelihood.out_channels(self.image_shape[0]))
        self.likelihood = likelihood

    # -- the model, per subclass ---------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """A deterministic code for `x` (the VAE's posterior mean)."""
        raise NotImplementedError

    def terms(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Per-image loss terms of reconstructing `target` (default: `x` itself) from `x`."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """Decoder logits for codes `z`."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """The mean reconstruction of `x` in pixel space."""
        return self.likelihood.mean(self.decode(self.encode(x)))

    # -- training (the steps themselves: aevae.chunked.ChunkedTraining) -----------------
    def batch_terms(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        return self.terms(*terms_args(batch))

    # -- evaluation (logged by aevae.models.module.Model) -------------------------------
    def evaluate(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        args = terms_args(batch)
        x, target = args[0], args[-1]
        code = self.encode(x)
        logits = self.decode(code)
        values = self.terms(*args)
        values["mse"] = pixel_mse(self.likelihood.mean(logits), target)
        values["bce"] = self.likelihood.bce(logits, target)
        if "neg_elbo" in values:
            values["bits_per_dim"] = bits_per_dim(values["neg_elbo"], self.image_shape)
        values["active_units"] = code
        return values
