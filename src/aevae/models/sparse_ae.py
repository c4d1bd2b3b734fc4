"""Sparse autoencoder: the AE with a sparsity penalty on its code, L1 (Tibshirani's lasso on the code)
or the KL to a target firing rate of sigmoid units (Ng, "Sparse autoencoder", CS294A notes, 2011)."""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor

from aevae.config import UserError
from aevae.models.ae import AE

PENALTIES = ("l1", "kl")
#: A code entry this close to 0 counts as silent in the `sparsity` metric of the L1 penalty.
ZERO = 1e-2


def l1_penalty(z: Tensor) -> Tensor:
    """sum_k |z_k| per image `[B]` of codes `z [B, d]`."""
    return z.abs().sum(1)


def rate_penalty(z: Tensor, target_rate: float, eps: float = 1e-6) -> Tensor:
    """sum_k KL(Bernoulli(rho) || Bernoulli(rho_k)) for the batch's mean activations rho_k of
    sigmoid codes `z [B, d]` and the target rate rho; a batch statistic, repeated for every image `[B]`."""
    rate = z.mean(0).clamp(eps, 1 - eps)
    rho = target_rate
    kl = rho * (rho / rate).log() + (1 - rho) * ((1 - rho) / (1 - rate)).log()
    return kl.sum().expand(len(z))


class SparseAE(AE):
    """loss = recon + sparsity * penalty(z).

    `penalty=l1`: sum_k |z_k|; the `sparsity` metric is the fraction of code entries with |z| < 1e-2.
    `penalty=kl`: the code is sigmoid(encoder(x)) and the penalty sum_k KL(target_rate || mean_batch
    z_k) (a batch statistic: its per-image term is the batch's value); the `sparsity` metric is
    the mean activation, to be compared with `target_rate`.
    """

    term_names = ("loss", "recon", "penalty")

    def __init__(
        self,
        *args: Any,
        sparsity: float = 0.1,
        penalty: str = "l1",
        target_rate: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if penalty not in PENALTIES:
            raise UserError(f"model.penalty={penalty!r} is not known; use one of {', '.join(PENALTIES)}")
        if not sparsity >= 0:
            raise UserError(f"model.sparsity={sparsity} must be a number >= 0")
        if penalty == "kl" and not 0 < target_rate < 1:
            raise UserError(f"model.target_rate={target_rate} must be a firing rate in (0, 1)")
        if penalty == "kl" and kwargs.get("latent_activation", "none") not in ("none", None):
            raise UserError("model.penalty=kl puts a sigmoid on the code; leave model.latent_activation=none")
        self.sparsity, self.penalty, self.target_rate = float(sparsity), penalty, float(target_rate)
        if penalty == "kl":
            self.latent_activation = torch.nn.Sigmoid()
        self.add_metric("sparsity", torchmetrics.MeanMetric)

    def code_penalty(self, z: Tensor) -> Tensor:
        """The unweighted penalty `[B]` of codes `z [B, d]`."""
        return l1_penalty(z) if self.penalty == "l1" else rate_penalty(z, self.target_rate)

    def code_sparsity(self, z: Tensor) -> Tensor:
        """Per image `[B]`: the fraction of silent entries (l1) or the mean activation (kl)."""
        return (z.abs() < ZERO).float().mean(1) if self.penalty == "l1" else z.mean(1)

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        z = self.encode(x)
        recon = self.likelihood(self.decode(z), x if target is None else target)
        penalty = self.code_penalty(z)
        return {"loss": recon + self.sparsity * penalty, "recon": recon, "penalty": penalty}

    def evaluate(self, batch: Any, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        values = super().evaluate(batch, generator)
        values["sparsity"] = self.code_sparsity(self.encode(self.unpack(batch)[0]))
        return values
