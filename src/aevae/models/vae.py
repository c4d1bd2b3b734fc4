"""Variational autoencoder: the AE plus a posterior head and a KL term."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.losses import kl_per_dim, log_prior_over_posterior
from aevae.models.base import Autoencoder
from aevae.validation import MSE_VAE


class VAE(Autoencoder):
    """Gaussian posterior q(z|x) = N(mu, diag(exp(log_var))), prior N(0, I).

    Trains on the negative ELBO per image, averaged over the batch: the reconstruction
    NLL (summed over pixels, averaged over `k` posterior samples) + beta * KL (summed over
    latent dims). `kl_warmup_epochs` ramps beta up linearly from 0; `free_bits` counts
    each latent dim's KL as at least that many nats in the loss (not in the logged KL).
    """

    code_factor = 2  # the posterior head: mean and log-variance per latent dim
    term_names = ("loss", "recon", "kl", "neg_elbo")
    has_prior = standard_prior = True

    def __init__(
        self,
        *args: Any,
        beta: float = 1.0,
        k: int = 1,
        kl_warmup_epochs: int = 0,
        free_bits: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.likelihood.is_likelihood:
            raise UserError(MSE_VAE)
        self.beta, self.k = float(beta), int(k)
        self.kl_warmup_epochs, self.free_bits = int(kl_warmup_epochs), float(free_bits)
        self.kl_weight = self.beta  # beta, scaled down during the warm-up

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The mean and log-variance `[B, d]` each of q(z|x) (of q(z|x, y) for a conditional model)."""
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        return mu, log_var

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.posterior(x, y)[0]

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    def sample(
        self,
        x: Tensor,
        k: int,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`k` reparameterized draws z ~ q(z|x) `[k, B, d]` and the NLL `[k, B]` of `target`
        (default: `x`) under each draw's decoding; `y`: the labels `[B]` of a conditional model."""
        mu, log_var = self.posterior(x, y)
        noise = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = draw(mu, log_var, noise)
        labels = None if y is None else y.repeat(k)  # draw-major, as z.flatten(0, 1)
        logits = self.decode(z.flatten(0, 1), labels).unflatten(0, (k, len(x)))
        recon = self.likelihood.of_draws(logits, x if target is None else target)
        return mu, log_var, z, recon

    def log_weights(
        self, x: Tensor, k: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """log p(x, z_i) - log q(z_i | x) for `k` draws `[k, B]`: their log-mean-exp bounds log p(x)
        (log p(x | y) given the labels `y` of a conditional model)."""
        mu, log_var, z, recon = self.sample(x, k, generator=generator, y=y)
        return log_prior_over_posterior(z, mu, log_var) - recon

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if self.k == 1:  # the default, without the draws dim of `sample`: its views and mean
            # made a default training step on a CPU ~4% slower than these three lines
            mu, log_var = self.posterior(x, y)
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            recon = self.likelihood(self.decode(draw(mu, log_var, noise), y), x if target is None else target)
        else:
            mu, log_var, _, recon = self.sample(x, self.k, target, generator, y)
            recon = recon.mean(0)
        kl_dims = kl_per_dim(mu, log_var)
        kl = kl_dims.sum(1)
        neg_elbo = recon + kl
        weight = self.kl_weight if self.training else self.beta
        if weight == 1 and not self.free_bits:
            loss = neg_elbo
        else:
            loss = recon + weight * (kl_dims.clamp(min=self.free_bits).sum(1) if self.free_bits else kl)
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": neg_elbo}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.kl_warmup_epochs:  # linear in the steps of the first kl_warmup_epochs epochs
            self.kl_weight = self.beta * min(1.0, self.training_progress() / self.kl_warmup_epochs)

    def graph_values(self) -> tuple[float, ...] | None:
        """The KL weight is baked into a captured step: eager steps while it ramps up."""
        return None if self.kl_weight != self.beta else (self.kl_weight,)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log("train/kl_weight", self.kl_weight)


def draw(mu: Tensor, log_var: Tensor, noise: Tensor) -> Tensor:
    """The reparameterized draw z = mu + sigma * noise: differentiable in mu and log_var."""
    return mu + noise * (0.5 * log_var).exp()
