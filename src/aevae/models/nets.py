"""Encoder/decoder networks (the `model/net` config group).

A net is a small factory: the model tells it how many features the encoder
must emit (the AE's code, or the VAE's mean and log-variance) and it builds
the matching encoder/decoder pair. Decoders emit logits; losses apply the
likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from aevae.config import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str | None) -> nn.Module:
    """An activation module by config name (`none`/null is the identity)."""
    key = "none" if name is None else str(name).lower()
    if key not in ACTIVATIONS:
        raise UserError(f"activation {name!r} is not known; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers through `sizes`, `act` between them, nothing after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(activation(act))
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MLP:
    """Fully connected pair: image -> hidden_dims -> features; latent -> reversed(hidden_dims) -> image.

    The default (hidden_dims=[128], latent 32) is the classic 784-128-32 tutorial model.
    """

    def __init__(
        self, image_shape: Sequence[int], hidden_dims: Sequence[int] = (128,), activation: str = "relu"
    ) -> None:
        self.image_shape = tuple(int(d) for d in image_shape)
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.activation = activation

    def encoder(self, out_features: int) -> nn.Module:
        sizes = [math.prod(self.image_shape), *self.hidden_dims, out_features]
        return nn.Sequential(nn.Flatten(), *mlp(sizes, self.activation))

    def decoder(self, latent_dim: int) -> nn.Module:
        sizes = [latent_dim, *reversed(self.hidden_dims), math.prod(self.image_shape)]
        return nn.Sequential(*mlp(sizes, self.activation), nn.Unflatten(1, self.image_shape))


class Conv:
    """DCGAN-style pair for 28x28 images: strided convolutions 28 -> 14 -> 7, then fully
    connected layers of `hidden_dims`; the decoder mirrors it with transposed convolutions.

    `channels` are the two convolutions' widths; `hidden_dims` (model.hidden_dims) the dense
    layers between them and the code.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int] = (128,),
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
    ) -> None:
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(channels) != 2 or self.image_shape[1:] != (28, 28):
            raise UserError(
                f"model.net.channels={list(channels)} with images {list(self.image_shape)}: the conv net "
                "takes two channel widths and 28x28 images"
            )
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.channels = [int(c) for c in channels]
        self.activation = activation
        self.flat = self.channels[1] * 7 * 7

    def encoder(self, out_features: int) -> nn.Module:
        c0, (c1, c2) = self.image_shape[0], self.channels
        return nn.Sequential(
            nn.Conv2d(c0, c1, 4, stride=2, padding=1),  # 28 -> 14
            activation(self.activation),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),  # 14 -> 7
            activation(self.activation),
            nn.Flatten(),
            *mlp([self.flat, *self.hidden_dims, out_features], self.activation),
        )

    def decoder(self, latent_dim: int) -> nn.Module:
        c0, (c1, c2) = self.image_shape[0], self.channels
        return nn.Sequential(
            *mlp([latent_dim, *reversed(self.hidden_dims), self.flat], self.activation),
            activation(self.activation),
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),  # 7 -> 14
            activation(self.activation),
            nn.ConvTranspose2d(c1, c0, 4, stride=2, padding=1),  # 14 -> 28: logits
        )
