"""What every autoencoder shares: networks, optimizer, metrics and logging.

A subclass only says how to encode an image to a point code and which
per-image loss terms it trains on (`terms`, which must include "loss").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchmetrics
from torch import Tensor, nn

from aevae.chunked import ChunkedTraining
from aevae.losses import ReconstructionLoss, bernoulli_nll, pixel_mse
from aevae.metrics import ActiveUnits

EVAL_STAGES = ("val", "test")


class Autoencoder(ChunkedTraining):
    """Base LightningModule for AE-style models.

    Args:
        latent_dim: size of the code z.
        net: factory taking `image_shape` and `hidden_dims` (e.g. `nets.MLP`),
            whose `.encoder(n)`/`.decoder(latent_dim)` build the two halves.
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
        super().__init__()
        self.save_hyperparameters(ignore=["net", "likelihood", "optimizer", "scheduler"], logger=False)
        self.latent_dim, self.lr = int(latent_dim), float(lr)
        self.image_shape = tuple(int(d) for d in image_shape)
        nets = net(image_shape=self.image_shape, hidden_dims=hidden_dims)
        self.encoder: nn.Module = nets.encoder(self.latent_dim * self.code_factor)
        self.decoder: nn.Module = nets.decoder(self.latent_dim)
        self.likelihood = likelihood
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        names = (*self.term_names, "mse", "bce")
        self.eval_metrics = nn.ModuleDict(
            {stage: nn.ModuleDict({n: torchmetrics.MeanMetric() for n in names}) for stage in EVAL_STAGES}
        )
        self.active_units = nn.ModuleDict({s: ActiveUnits(self.latent_dim) for s in EVAL_STAGES})
        #: The run's resolved config, stored in checkpoints as plain containers.
        self.run_config: dict[str, Any] | None = None

    # -- the model, per subclass ---------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """A deterministic code for `x` (the VAE's posterior mean)."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """Decoder logits for codes `z`."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """The mean reconstruction of `x` in pixel space."""
        return self.likelihood.mean(self.decode(self.encode(x)))

    # -- training (the steps themselves: aevae.chunked.ChunkedTraining) -----------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters(), lr=self.lr)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    # -- evaluation ------------------------------------------------------------------
    def _evaluate(self, x: Tensor, stage: str) -> None:
        code = self.encode(x)
        logits = self.decode(code)
        values = self.terms(x)
        values["mse"] = pixel_mse(self.likelihood.mean(logits), x)
        values["bce"] = bernoulli_nll(logits, x)
        for name, metric in self.eval_metrics[stage].items():
            metric.update(values[name])
        self.active_units[stage].update(code)

    def _log_eval(self, stage: str) -> None:
        results = {f"{stage}/{n}": m.compute() for n, m in self.eval_metrics[stage].items()}
        results[f"{stage}/active_units"] = self.active_units[stage].compute()
        self.log_dict(results, prog_bar=stage == "val")
        for metric in (*self.eval_metrics[stage].values(), self.active_units[stage]):
            metric.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch[0], "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch[0], "test")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # -- checkpoints -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.run_config is not None:
            checkpoint["aevae_config"] = self.run_config
