"""What every autoencoder shares: networks, likelihood, evaluation metrics, and the small API
through which a model file gets what it needs from training.

A model file holds only its math. It subclasses `Autoencoder` and says

- how an image becomes a code and back: `encode(x, y)`, `decode(z, y)`;
- the per-image terms it trains on: `terms(x, target, generator, y)` -> {name: `[B]`}, keyed by
  its `term_names`, "loss" first (the one minimized; every term is logged as train/val/test);
- where new codes come from, if it has a prior: `has_prior = True` and `prior_codes(n, ...)`.

What a model needs from training, the base offers (none of it needs Lightning):

- `self.training_progress()`: epochs of training done, fractional (warm-ups);
- `conditional = True`: the batch's labels reach `encode`/`decode`/`terms` as `y` (class ids
  `[B]`), `self.num_classes` is set and `one_hot(y)` encodes them;
- `add_metric(name, factory)` and an `evaluate` that adds `values[name]`: more val/test metrics;
- `after_step()`: called after every optimizer step, inside the step (a CUDA graph captures it
  with the step), for buffers that are not trained by gradients (an EMA codebook);
  `sum_over_ranks(t)` adds a tensor up over DDP ranks there (a no-op on one process);
- `build(nets, out_channels)`: the networks, from the `model/net` factory; override it when a
  model needs other halves (a spatial code, a second stochastic layer).

On corrupted data (`data.noise`) the terms score the reconstruction of the clean target from
the noisy input: a denoising autoencoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchmetrics
from torch import Tensor, nn

from aevae.config import UserError
from aevae.losses import ReconstructionLoss, bits_per_dim, pixel_mse
from aevae.metrics import ActiveUnits
from aevae.models.module import EVAL_STAGES, Model


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
        num_classes: classes of the data's labels (used by conditional models only).
    """

    #: The encoder emits `latent_dim * code_factor` features (VAE: mean and log-variance).
    code_factor = 1
    #: Per-image terms of `terms`; "loss" (first) is what training minimizes.
    term_names: tuple[str, ...] = ("loss",)
    #: The batch's labels reach encode/decode/terms as `y`.
    conditional = False
    #: `prior_codes` draws codes that decode to new images (the model was trained towards a prior).
    has_prior = False
    #: That prior is N(0, I) over the code (not learned): codes can be drawn without the model.
    standard_prior = False

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
        num_classes: int = 0,
    ) -> None:
        metrics = dict.fromkeys((*self.term_names, "mse", "bce"), torchmetrics.MeanMetric)
        if "neg_elbo" in self.term_names:  # a likelihood model: its NLL bound in bits/dim too
            metrics["bits_per_dim"] = torchmetrics.MeanMetric
        metrics["active_units"] = lambda: ActiveUnits(int(latent_dim))
        super().__init__(optimizer, lr, metrics, scheduler)
        self.save_hyperparameters(ignore=["net", "likelihood", "optimizer", "scheduler"], logger=False)
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        if self.conditional and self.num_classes < 2:
            raise UserError(
                f"model={type(self).__name__.lower()} is conditioned on class labels and the data have "
                f"{self.num_classes}; use labelled data (an image folder's classes are its sub-folders)"
            )
        self.likelihood = likelihood
        # as many maps per pixel as the likelihood has parameters (the logistic's mean and scale)
        nets = net(image_shape=self.image_shape, hidden_dims=hidden_dims)
        self.build(nets, likelihood.out_channels(self.image_shape[0]))

    def build(self, nets: Any, out_channels: int) -> None:
        """The networks: `self.encoder` (image -> `latent_dim * code_factor` features) and
        `self.decoder` (code -> `out_channels` likelihood maps)."""
        self.encoder: nn.Module = nets.encoder(self.latent_dim * self.code_factor)
        self.decoder: nn.Module = nets.decoder(self.latent_dim, out_channels)

    # -- the model's math, per model file -------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A deterministic code for images `x [B, C, H, W]` (the VAE's posterior mean)."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Likelihood parameters (logits) `[B, out_channels, H, W]` for codes `z`."""
        return self.decoder(z)

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per-image terms `[B]` of reconstructing `target` (default: `x` itself) from `x`; a model
        that draws noise takes it from `generator` (None, as in training: the global RNG)."""
        raise NotImplementedError

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """`n` codes drawn from the model's prior (`has_prior`), on the model's device."""
        raise UserError(
            f"model={type(self).__name__.lower()} has no prior to sample codes from; "
            "use sampler=gaussian or sampler=gmm (fitted to the training codes)"
        )

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean reconstruction of `x` in pixel space."""
        return self.likelihood.mean(self.decode(self.encode(x, y), y))

    # -- what the base offers a model -----------------------------------------------------
    def one_hot(self, y: Tensor) -> Tensor:
        """Class ids `[B]` as float one-hot rows `[B, num_classes]`."""
        return nn.functional.one_hot(y.long(), self.num_classes).to(torch.get_default_dtype())

    def sample_labels(self, n: int) -> Tensor | None:
        """Labels for `n` generated images of a conditional model, cycling through the classes
        (one class per column of an 8- or 10-wide grid); None for other models."""
        if not self.conditional:
            return None
        return torch.arange(n, device=self.device) % self.num_classes

    def add_metric(self, name: str, factory: Callable[[], torchmetrics.Metric]) -> None:
        """One more val/test metric, `<stage>/<name>`, updated with `evaluate(...)[name]`."""
        for stage in EVAL_STAGES:
            self.eval_metrics[stage][name] = factory()

    def sum_over_ranks(self, value: Tensor) -> Tensor:
        """`value` summed over the DDP ranks, in place (unchanged on a single process)."""
        if self._distributed:
            torch.distributed.all_reduce(value)
        return value

    # -- training (the steps themselves: aevae.engine.chunked.ChunkedTraining) ----------------
    def unpack(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """`(inputs, target, y)` of a batch `(inputs, labels[, clean])`: the clean images of
        corrupted data are the target; `y` the labels for a conditional model, else None."""
        x = batch[0]
        return x, batch[2] if len(batch) > 2 else x, batch[1] if self.conditional else None

    def batch_terms(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        x, target, y = self.unpack(batch)
        return self.terms(x, target, y=y)

    # -- evaluation (logged by aevae.models.module.Model) -------------------------------
    def evaluate(
        self, batch: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        x, target, y = self.unpack(batch)
        code = self.encode(x, y)
        logits = self.decode(code, y)
        values = self.terms(x, target, generator=generator, y=y)
        values["mse"] = pixel_mse(self.likelihood.mean(logits), target)
        values["bce"] = self.likelihood.bce(logits, target)
        if "neg_elbo" in values:
            values["bits_per_dim"] = bits_per_dim(values["neg_elbo"], self.image_shape)
        values["active_units"] = code.flatten(1)
        return values
