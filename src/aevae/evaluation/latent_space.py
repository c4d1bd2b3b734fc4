"""How smooth the latent space is along interpolations between real images."""

from __future__ import annotations

from torch import Tensor

from aevae.models import Autoencoder
from aevae.sampling.pictures import decoded_paths


def interpolation_smoothness(
    model: Autoencoder,
    start: Tensor,
    end: Tensor,
    steps: int = 16,
    mode: str = "slerp",
    labels: tuple[Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """Decoded change between consecutive points of the paths from `start` to `end` images.

    - `step_change`: the mean root-mean-square pixel change from one point to the next;
    - `max_step_ratio`: per path, its largest step over its mean step, averaged: 1 when the
      image changes evenly along the path, large when it jumps (a hole in the latent space).

    `labels`: the classes of the start and end images, for a conditional model (`decoded_paths`).
    """
    decoded = decoded_paths(model, start, end, steps, mode, labels).flatten(2)  # [P, S, pixels]
    change = (decoded[:, 1:] - decoded[:, :-1]).square().mean(-1).sqrt()  # [P, S - 1]
    ratio = change.max(1).values / change.mean(1).clamp_min(1e-12)
    return {"step_change": change.mean().item(), "max_step_ratio": ratio.mean().item()}
