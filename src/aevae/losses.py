"""Reconstruction losses (the `loss` config group) and the Gaussian KL.

Every loss takes decoder *logits* and images in [0, 1] and returns one value
per image, so AE and VAE average over the batch the same way. The likelihoods
(`Bernoulli`, `Gaussian`, `DiscretizedLogistic`) sum over pixels and are in nats
per image; `MSE` is the tutorial's per-pixel mean and is not a likelihood, so the
VAE refuses it. A likelihood with more than one parameter per pixel value says how
many maps the decoder must emit in `out_channels`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevae.config import UserError

LOG_2PI = math.log(2 * math.pi)


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


def log_normal(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(log_var))), summed over the last (latent) dim; shapes broadcast."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).square() / log_var.exp()).sum(-1)


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(values))) along `dim`, stable for values far below zero (log-weights of ~-100 nats)."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


class ReconstructionLoss(nn.Module):
    """Base: maps decoder logits to a mean image and a per-image loss."""

    #: True when `forward` is a negative log-likelihood in nats (usable in an ELBO).
    is_likelihood = True

    def out_channels(self, channels: int) -> int:
        """Decoder output maps for images of `channels` channels: one logit per pixel value."""
        return channels

    def mean(self, logits: Tensor) -> Tensor:
        """The reconstruction in pixel space, [0, 1]."""
        return torch.sigmoid(logits)

    def bce(self, logits: Tensor, x: Tensor) -> Tensor:
        """Binary cross-entropy of the reconstruction per image, the metric every model reports."""
        return bernoulli_nll(logits, x)

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def of_draws(self, logits: Tensor, x: Tensor) -> Tensor:
        """The loss `[S, B]` of S decodings of each image, `logits [S, B, ...]`, against the
        images `x [B, ...]` (importance sampling decodes thousands of draws per image)."""
        targets = x.expand(logits.shape[0], *x.shape).flatten(0, 1)
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


def bits_per_dim(nats_per_image: Tensor | float, image_shape: tuple[int, ...]) -> Tensor | float:
    """An NLL in nats per image as bits per pixel value: / (C * H * W * ln 2)."""
    return nats_per_image / (math.prod(image_shape) * math.log(2))


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int = 256) -> Tensor:
    """log P(x) per pixel value under a logistic(mean, exp(log_scale)) discretized to `levels` bins.

    `x` in [0, 1] on the grid k / (levels - 1); `mean` and `log_scale` on the [-1, 1] scale of
    PixelCNN++ (Salimans et al. 2017), whose bins are 2 / (levels - 1) wide. The edge bins
    take the tails, so the probabilities of the `levels` values sum to 1.
    """
    x = x * 2 - 1
    half = 1 / (levels - 1)
    inv_scale = torch.exp(-log_scale)
    centred = x - mean
    upper, lower = inv_scale * (centred + half), inv_scale * (centred - half)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper), the lowest bin's mass
    log_sf_lower = -F.softplus(lower)  # log (1 - sigmoid(lower)), the highest bin's mass
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    # a bin far out in the tail has a mass lost to rounding (a difference of two CDFs near 1):
    # use the density at its centre times its width there (PixelCNN++'s fallback, below 1e-5
    # in float32)
    middle = inv_scale * centred
    log_density = middle - log_scale - 2 * F.softplus(middle) + math.log(2 * half)
    exact = mass > 100 * torch.finfo(mass.dtype).eps
    inner = torch.where(exact, mass.clamp_min(torch.finfo(mass.dtype).tiny).log(), log_density)
    return torch.where(x < -1 + half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, inner))


class DiscretizedLogistic(ReconstructionLoss):
    """A discretized logistic over the 256 levels of 8-bit pixels, summed over pixels, nats per
    image: the usual likelihood for colour images (PixelCNN++, IAF-VAE). With `components`
    K > 1, a mixture of K logistics per pixel with weights shared by its channels (channels
    independent given the component). The decoder emits per image channel C: the mean and
    the log-scale (K = 1), or per pixel K weight logits plus K means and K log-scales per
    channel (`out_channels`).
    """

    def __init__(self, components: int = 1, min_log_scale: float = -7.0) -> None:
        super().__init__()
        if int(components) < 1:
            raise UserError(f"loss.components={components} must be >= 1")
        self.components, self.min_log_scale = int(components), float(min_log_scale)

    def out_channels(self, channels: int) -> int:
        """Decoder output maps for images of `channels` channels."""
        k = self.components
        return 2 * channels if k == 1 else k + 2 * k * channels

    def _split(self, params: Tensor, channels: int) -> tuple[Tensor | None, Tensor, Tensor]:
        """(weight logits `[B, K, H, W]` or None, means and log-scales `[B, K, C, H, W]`)."""
        k = self.components
        if k == 1:
            mean, log_scale = params.unflatten(1, (2, channels)).unbind(1)
            return None, mean.unsqueeze(1), log_scale.clamp_min(self.min_log_scale).unsqueeze(1)
        weights, rest = params[:, :k], params[:, k:].unflatten(1, (2, k, channels))
        return weights, rest[:, 0], rest[:, 1].clamp_min(self.min_log_scale)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log P(x) per pixel position `[B, H, W]` (summed over channels, mixed over components)."""
        weights, mean, log_scale = self._split(params, x.shape[1])
        per_component = discretized_logistic_log_prob(x.unsqueeze(1), mean, log_scale).sum(2)
        if weights is None:
            return per_component[:, 0]
        return torch.logsumexp(F.log_softmax(weights, dim=1) + per_component, dim=1)

    def forward(self, params: Tensor, x: Tensor) -> Tensor:
        return -per_image(self.log_prob(params, x))

    def bce(self, params: Tensor, x: Tensor) -> Tensor:
        """Binary cross-entropy of the mean reconstruction (its parameters are no logits)."""
        return per_image(F.binary_cross_entropy(self.mean(params).clamp(1e-6, 1 - 1e-6), x, reduction="none"))

    def mean(self, params: Tensor) -> Tensor:
        """The expected pixel value in [0, 1] (the mixture's weighted component means)."""
        k = self.components
        channels = params.shape[1] // 2 if k == 1 else (params.shape[1] - k) // (2 * k)
        weights, mean, _ = self._split(params, channels)
        expected = mean[:, 0] if weights is None else (F.softmax(weights, 1).unsqueeze(2) * mean).sum(1)
        return ((expected + 1) / 2).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"components={self.components}"
