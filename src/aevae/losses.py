"""Reconstruction losses (the `loss` config group) and the Gaussian KL.

Every loss takes decoder *logits* and images in [0, 1] and returns one value
per image, so AE and VAE average over the batch the same way. The likelihoods
(`Bernoulli`, `Gaussian`) sum over pixels and are in nats per image; `MSE` is
the tutorial's per-pixel mean and is not a likelihood, so the VAE refuses it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevae.config import UserError


def per_image(values: Tensor) -> Tensor:
    """Sum a per-pixel tensor `[B, ...]` over everything but the batch dim."""
    return values.flatten(1).sum(1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | logits) under independent Bernoulli pixels, nats per image."""
    return per_image(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def pixel_mse(mean: Tensor, x: Tensor) -> Tensor:
    """Mean squared error over the pixels of each image."""
    return (mean - x).square().flatten(1).mean(1)


def kl_per_dim(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) per latent dim `[B, d]`.

    = -0.5 * (1 + log_var - mu^2 - exp(log_var)); it is >= 0.
    """
    return -0.5 * (1 + log_var - mu.square() - log_var.exp())


def kl_std_normal(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per image, summed over latent dims; it is >= 0."""
    return kl_per_dim(mu, log_var).sum(1)


def log_prior_over_posterior(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; 0, I) - log N(z; mu, exp(log_var)), summed over latent dims (the 2 pi terms cancel)."""
    return -0.5 * (z.square() - (z - mu).square() / log_var.exp() - log_var).sum(-1)


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(values))) along `dim`, stable for values far below zero (log-weights of ~-100 nats)."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


class ReconstructionLoss(nn.Module):
    """Base: maps decoder logits to a mean image and a per-image loss."""

    #: True when `forward` is a negative log-likelihood in nats (usable in an ELBO).
    is_likelihood = True

    def mean(self, logits: Tensor) -> Tensor:
        """The reconstruction in pixel space, [0, 1]."""
        return torch.sigmoid(logits)

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def of_draws(self, logits: Tensor, x: Tensor) -> Tensor:
        """The loss `[S, B]` of S decodings of each image, `logits [S, B, ...]`, against the
        images `x [B, ...]` (importance sampling decodes thousands of draws per image)."""
        targets = x.expand_as(logits).flatten(0, 1)
        return self(logits.flatten(0, 1), targets).view(logits.shape[:2])


class Bernoulli(ReconstructionLoss):
    """Binary cross-entropy summed over pixels: the default for [0, 1] images."""

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:
        return bernoulli_nll(logits, x)

    def of_draws(self, logits: Tensor, x: Tensor) -> Tensor:
        """Without gradients (evaluation, thousands of draws per image) as sum(softplus(logits))
        - x . logits: the same NLL in half the time, without S copies of x. Training keeps the
        fused cross-entropy kernel, whose backward is the cheaper one."""
        if torch.is_grad_enabled():
            return super().of_draws(logits, x)
        flat = logits.flatten(2)
        return F.softplus(flat).sum(-1) - torch.einsum("sbp,bp->sb", flat, x.flatten(1))


class Gaussian(ReconstructionLoss):
    """N(x; sigmoid(logits), sigma^2) per pixel, summed over pixels: for non-binary images.

    `sigma` is fixed, or with `learn_sigma` the starting value of one standard deviation per
    pixel of `image_shape`, learned with the model (kept above `min_sigma`, where the NLL of
    a constant pixel would diverge).
    """

    def __init__(
        self,
        sigma: float = 0.1,
        learn_sigma: bool = False,
        image_shape: tuple[int, ...] = (1, 28, 28),
        min_sigma: float = 1e-3,
    ) -> None:
        super().__init__()
        if not sigma > 0:
            raise UserError(f"loss.sigma={sigma} must be > 0")
        self.learn_sigma, self.min_sigma = bool(learn_sigma), float(min_sigma)
        if self.learn_sigma:
            self.log_sigma = nn.Parameter(torch.full(tuple(image_shape), math.log(sigma)))
        else:
            self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:
        log_sigma = self.log_sigma.clamp(min=math.log(self.min_sigma))
        z = (x - self.mean(logits)) / log_sigma.exp()
        return per_image(0.5 * z.square() + log_sigma + 0.5 * math.log(2 * math.pi))

    def extra_repr(self) -> str:
        return f"learn_sigma={self.learn_sigma}"


class MSE(ReconstructionLoss):
    """Per-pixel mean squared error of sigmoid(logits), as in the classic tutorial."""

    is_likelihood = False

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:
        return pixel_mse(self.mean(logits), x)
