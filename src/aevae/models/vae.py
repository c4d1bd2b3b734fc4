"""Variational autoencoder: the AE plus a posterior head and a KL term."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.losses import kl_std_normal
from aevae.models.base import Autoencoder
from aevae.validation import MSE_VAE


class VAE(Autoencoder):
    """Gaussian posterior q(z|x) = N(mu, diag(exp(log_var))), prior N(0, I).

    Trains on the negative ELBO per image, averaged over the batch:
    recon NLL (summed over pixels) + beta * KL (summed over latent dims).
    """

    code_factor = 2  # the posterior head: mean and log-variance per latent dim
    term_names = ("loss", "recon", "kl", "neg_elbo")

    def __init__(self, *args: Any, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.likelihood.is_likelihood:
            raise UserError(MSE_VAE)
        self.beta = float(beta)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        return mu, log_var

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def terms(self, x: Tensor) -> dict[str, Tensor]:
        mu, log_var = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()  # reparameterization
        recon = self.likelihood(self.decode(z), x)
        kl = kl_std_normal(mu, log_var)
        neg_elbo = recon + kl
        loss = neg_elbo if self.beta == 1 else recon + self.beta * kl
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": neg_elbo}
