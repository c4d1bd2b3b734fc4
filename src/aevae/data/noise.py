"""Corruptions for the denoising autoencoder, drawn on the device, batch by batch.

The noise of a batch is a function of (seed, epoch, position), not of the order
in which batches are drawn: a resumed run and an evaluation see the same noisy
images as the run that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.rng import keyed_generator


def gaussian(x: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """Additive N(0, level²) noise, clipped back to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return (x + level * noise).clamp_(0, 1)


def salt_pepper(x: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """A fraction `level` of the pixels set to black or white, half each."""
    u = torch.rand(x.shape, generator=generator, device=x.device)
    noisy = torch.where(u < level / 2, 0.0, x)
    return torch.where((u >= level / 2) & (u < level), 1.0, noisy)


def mask(x: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """A fraction `level` of the pixels dropped to black (masking noise)."""
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= level
    return x * keep


NOISES: dict[str, Callable[[Tensor, float, torch.Generator], Tensor]] = {
    "gaussian": gaussian,
    "salt_pepper": salt_pepper,
    "mask": mask,
}


class Corruption:
    """`noise` at `level` (gaussian: the standard deviation; salt_pepper, mask: the fraction
    of pixels hit), seeded by `seed` and the batch's place in the data."""

    def __init__(self, noise: str, level: float, seed: int = 0) -> None:
        if noise not in NOISES:
            raise UserError(f"data.noise={noise!r} is not known; choose one of {sorted(NOISES)}")
        self.noise, self.level, self.seed = noise, float(level), int(seed)

    def __call__(self, x: Tensor, *place: int) -> Tensor:
        """`x` corrupted with the noise of the batch at `place` (e.g. epoch, first index)."""
        generator = keyed_generator((self.seed, *place), x.device)
        return NOISES[self.noise](x, self.level, generator)

    def __repr__(self) -> str:
        return f"Corruption({self.noise}, level={self.level}, seed={self.seed})"
