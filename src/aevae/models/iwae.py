"""Importance-weighted autoencoder (Burda, Grosse & Salakhutdinov, 2015): the VAE's networks,
trained on the k-sample bound log mean_i p(x, z_i) / q(z_i | x), tighter than the ELBO."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.losses import kl_std_normal, log_mean_exp, log_prior_over_posterior
from aevae.models.vae import VAE


class IWAE(VAE):
    """`loss` is the negative k-sample bound; `neg_elbo` the ELBO on the same draws, for comparison."""

    def __init__(self, *args: Any, k: int = 50, **kwargs: Any) -> None:
        super().__init__(*args, k=k, **kwargs)
        if self.beta != 1 or self.kl_warmup_epochs or self.free_bits:
            raise UserError(
                "model=iwae trains the importance-weighted bound itself: keep model.beta=1, "
                "model.kl_warmup_epochs=0 and model.free_bits=0"
            )

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        mu, log_var, z, recon = self.sample(x, self.k, target, generator)
        log_w = log_prior_over_posterior(z, mu, log_var) - recon  # [k, B]
        kl = kl_std_normal(mu, log_var)
        return {
            "loss": -log_mean_exp(log_w),
            "recon": recon.mean(0),
            "kl": kl,
            "neg_elbo": recon.mean(0) + kl,
        }
