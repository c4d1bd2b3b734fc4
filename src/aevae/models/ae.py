"""Deterministic autoencoder: x -> z -> x."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aevae.models.base import Autoencoder
from aevae.models.nets import activation


class AE(Autoencoder):
    """The plain autoencoder; trains on the reconstruction loss alone.

    `latent_activation` (default none) is applied to the code. The classic
    tutorial put a ReLU there, which silences every latent unit that goes
    negative for all inputs.
    """

    def __init__(self, *args: Any, latent_activation: str | None = "none", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latent_activation = activation(latent_activation)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.latent_activation(self.encoder(x))

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        target = x if target is None else target  # deterministic: no noise to draw
        return {"loss": self.likelihood(self.decode(self.encode(x)), target)}
