"""Tensor helpers behind the latent-space pictures: encoding in batches, Gaussian fits, paths."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from aevae.losses import kl_std_normal
from aevae.models import VAE, Autoencoder


def encode_all(model: Autoencoder, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Deterministic codes (the VAE's posterior means) of `images`, a batch at a time."""
    return torch.cat([model.encode(x) for x in images.split(batch_size)])


def posterior_all(model: VAE, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """The VAE's posterior means and log-variances of `images`, a batch at a time."""
    means, log_vars = zip(*(model.posterior(x) for x in images.split(batch_size)), strict=True)
    return torch.cat(means), torch.cat(log_vars)


def kl_per_dim(mu: Tensor, log_var: Tensor) -> Tensor:
    """Mean KL(q(z_d|x) || N(0, 1)) of each latent dim over the images, nats `[latent_dim]`.

    Dims near 0 carry no information about x: the posterior collapsed to the prior there.
    """
    return kl_std_normal(mu.T, log_var.T) / len(mu)  # transposed, it sums over the images


def fit_gaussian(latents: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and a factor `F` with `F @ F.T` = covariance of `latents [N, D]`.

    The factor comes from an eigendecomposition rather than a Cholesky one, so
    that dead latent units (zero variance, a singular covariance) still work.
    """
    mean = latents.mean(0)
    centered = latents - mean
    covariance = centered.T @ centered / max(len(latents) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    return mean, eigenvectors * eigenvalues.clamp_min(0).sqrt()


def gaussian_draws(noise: Tensor, mean: Tensor, factor: Tensor) -> Tensor:
    """Standard-normal `noise [N, D]` mapped to draws of N(mean, factor @ factor.T)."""
    return mean + noise @ factor.T


def prior_codes(
    model: Autoencoder,
    noise: Tensor,
    fit_codes: Callable[[], Tensor],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Codes that decode to new images, from standard-normal `noise [N, D]`: the prior's own draws
    for a VAE; for an AE, which has no prior, draws of a Gaussian fitted to `fit_codes()`
    (called only then: training codes). A model with a prior of another kind (a VQ-VAE's code
    grid) draws `N` codes itself, from `generator` (default: seeded 0, the same draws each call)."""
    if not model.has_prior:
        return gaussian_draws(noise, *fit_gaussian(fit_codes()))
    if isinstance(model, VAE):
        return noise
    if generator is None:
        generator = torch.Generator(noise.device).manual_seed(0)
    return model.prior_codes(len(noise), generator=generator)


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Points on the segments a[i] -> b[i] at fractions `t [S]`: `[P, S, D]`."""
    t = t[None, :, None]
    return (1 - t) * a[:, None] + t * b[:, None]


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation a[i] -> b[i] at fractions `t [S]`: `[P, S, D]`.

    Keeps the norm of Gaussian codes typical all along the path, where the straight
    line passes close to the origin, a region the prior puts little mass on
    (White, 2016). Falls back to `lerp` for (anti)parallel pairs.
    """
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
    omega = torch.acos(cos)[:, None, None]
    sin = torch.sin(omega)
    t = t[None, :, None]
    spherical = (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / sin.clamp_min(
        1e-6
    )
    return torch.where(sin > 1e-6, spherical, lerp(a, b, t[0, :, 0]))


INTERPOLATIONS = {"slerp": slerp, "lerp": lerp}
