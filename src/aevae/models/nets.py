"""Encoder/decoder networks (the `model/net` config group).

A net is a small factory built for one image shape `(C, H, W)`: the model tells
it how many features the encoder must emit (the AE's code, or the VAE's mean
and log-variance) and how many maps the decoder must emit (the likelihood's
`out_channels`, C by default), and it builds the matching encoder/decoder pair:

    encoder(out_features):             [B, C, H, W] in [0, 1] -> [B, out_features]
    decoder(latent_dim, out_channels): [B, latent_dim] -> [B, out_channels, H, W]

The convolutional nets also build a pair for a spatial code (a grid of code vectors, VQ-VAE):

    spatial_encoder(channels):               [B, C, H, W] -> [B, channels, h, w]
    spatial_decoder(channels, out_channels): [B, channels, h, w] -> [B, out_channels, H, W]

with `(h, w) = grid`, the feature map of the strided blocks (7x7 at 28x28); no dense layers.

Decoders emit logits (likelihood parameters); losses apply the likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

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

    encoder: [B, C, H, W] -> flatten [B, C*H*W] -> hidden_dims -> [B, out_features]
    decoder: [B, latent_dim] -> reversed(hidden_dims) -> [B, out_channels*H*W] -> [B, out_channels, H, W]

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

    def decoder(self, latent_dim: int, out_channels: int | None = None) -> nn.Module:
        shape = (out_channels or self.image_shape[0], *self.image_shape[1:])
        sizes = [latent_dim, *reversed(self.hidden_dims), math.prod(shape)]
        return nn.Sequential(*mlp(sizes, self.activation), nn.Unflatten(1, shape))


def strided_widths(
    net: str, image_shape: tuple[int, ...], channels: str | Sequence[int], auto: Callable[[int], int]
) -> list[int]:
    """The widths of the stride-2 blocks of `net` for images `image_shape`, one block per halving.

    `channels="auto"` halves the smaller side while it stays >= 4 (28 -> 7, 32 -> 4, 64 -> 4),
    block i `auto(i)` wide; a list of widths sets the number of blocks itself. H and W must
    both be divisible by 2^blocks, else a UserError names the sizes that fit.
    """
    h, w = image_shape[1:]
    if channels == "auto":
        depth = (min(h, w) // 4).bit_length() - 1  # the most halvings that leave a side >= 4
        if depth < 1:
            raise UserError(
                f"model/net={net} takes images of at least 8x8, not {h}x{w}: set data.image_size "
                "to 8 or more, or use model/net=mlp"
            )
        channels = [auto(i) for i in range(depth)]
    elif isinstance(channels, str) or not channels or any(int(c) < 1 for c in channels):
        raise UserError(
            f"model.net.channels={channels} must be auto or a list of integers >= 1, e.g. [32,64]"
        )
    widths, factor = [int(c) for c in channels], 2 ** len(channels)
    if h % factor or w % factor:
        raise UserError(
            f"model/net={net} with {len(widths)} blocks takes image sizes divisible by {factor} "
            f"(e.g. {4 * factor}, {8 * factor}), not {h}x{w}: set data.image_size to one of them "
            "or model.net.channels to fewer blocks"
        )
    return widths


def halvings(widths: Sequence[int], act: str, transposed: bool = False) -> list[nn.Module]:
    """4x4 stride-2 convolutions from `widths[0]` channels through each next width, `act`
    between them: each halves H and W (`transposed`: doubles them)."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            layers.append(activation(act))
        layers.append(conv(c_in, c_out, 4, stride=2, padding=1))
    return layers


def map_shape(widths: Sequence[int], image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The smallest feature map `(c_d, H / 2^d, W / 2^d)` after the d stride-2 blocks of `widths`."""
    factor = 2 ** len(widths)
    return widths[-1], image_shape[1] // factor, image_shape[2] // factor


class Conv:
    """DCGAN-style pair: stride-2 convolutions down to about 4x4, dense layers to the code; the
    decoder mirrors it with transposed convolutions.

    encoder: [B, C, H, W] -> Conv 4x4/2 + act per width c_i [B, c_i, H/2^(i+1), W/2^(i+1)]
             -> flatten [B, c_d * h * w] (h, w = H/2^d, W/2^d) -> hidden_dims -> [B, out_features]
    decoder: [B, latent_dim] -> reversed(hidden_dims) -> [B, c_d * h * w] + act -> [B, c_d, h, w]
             -> ConvTranspose 4x4/2 (+ act but the last) per reversed width -> [B, out_channels, H, W]

    `channels` are the d blocks' widths; `auto` takes one block per halving that leaves a side
    >= 4, widths 32, 64, 128, 256, 256, ...: [32, 64] at 28x28 (28 -> 14 -> 7), [32, 64, 128]
    at 32 (-> 4), [32, 64, 128, 256] at 64 (-> 4). `hidden_dims` (model.hidden_dims) are the
    dense layers between the convolutions and the code.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int] = (128,),
        channels: str | Sequence[int] = "auto",
        activation: str = "relu",
    ) -> None:
        self.image_shape = tuple(int(d) for d in image_shape)
        self.channels = strided_widths("conv", self.image_shape, channels, lambda i: min(32 * 2**i, 256))
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.activation = activation
        self.map_shape = map_shape(self.channels, self.image_shape)

    def encoder(self, out_features: int) -> nn.Module:
        flat = math.prod(self.map_shape)
        return nn.Sequential(
            *halvings([self.image_shape[0], *self.channels], self.activation),
            activation(self.activation),
            nn.Flatten(),
            *mlp([flat, *self.hidden_dims, out_features], self.activation),
        )

    def decoder(self, latent_dim: int, out_channels: int | None = None) -> nn.Module:
        flat = math.prod(self.map_shape)
        return nn.Sequential(
            *mlp([latent_dim, *reversed(self.hidden_dims), flat], self.activation),
            activation(self.activation),
            nn.Unflatten(1, self.map_shape),
            *halvings([*reversed(self.channels), out_channels or self.image_shape[0]], self.activation, True),
        )

    @property
    def grid(self) -> tuple[int, int]:
        """`(h, w)` of the spatial code."""
        return self.map_shape[1], self.map_shape[2]

    def spatial_encoder(self, channels: int) -> nn.Module:
        """The strided blocks, then a 1x1 convolution to `channels` per grid position."""
        return nn.Sequential(
            *halvings([self.image_shape[0], *self.channels], self.activation),
            activation(self.activation),
            nn.Conv2d(self.channels[-1], channels, 1),
        )

    def spatial_decoder(self, channels: int, out_channels: int | None = None) -> nn.Module:
        """A 3x3 convolution from the code grid, then the transposed strided blocks."""
        return nn.Sequential(
            nn.Conv2d(channels, self.channels[-1], 3, padding=1),
            activation(self.activation),
            *halvings([*reversed(self.channels), out_channels or self.image_shape[0]], self.activation, True),
        )


class Residual(nn.Module):
    """x + Conv1x1(act(Conv3x3(act(x)))): a pre-activation bottleneck block, `[B, c, h, w]` kept."""

    def __init__(self, channels: int, inner: int, act: str) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            activation(act),
            nn.Conv2d(channels, inner, 3, padding=1),
            activation(act),
            nn.Conv2d(inner, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class ResNet:
    """Residual pair for 32-64 px colour images, after pythae's CIFAR/CelebA benchmark nets:
    a stride-2 convolution stem down to about 4x4, residual blocks, dense layers to the code;
    the decoder mirrors it (dense -> residual blocks -> transposed convolutions).

    encoder: [B, C, H, W] -> Conv 4x4/2 per width c_i (act between) -> [B, c_d, h, w]
             (h, w = H/2^d, W/2^d) -> `blocks` x Residual(c_d, `residual_channels`) + act
             -> flatten [B, c_d * h * w] -> hidden_dims -> [B, out_features]
    decoder: [B, latent_dim] -> reversed(hidden_dims) -> [B, c_d * h * w] -> [B, c_d, h, w]
             -> `blocks` x Residual + act -> ConvTranspose 4x4/2 per reversed width (act between)
             -> [B, out_channels, H, W]

    `channels` `auto` takes one stride-2 convolution per halving that leaves a side >= 4, widths
    64, 128, 128, ...: [64, 128, 128] at 32 (-> 4x4), [64, 128, 128, 128] at 64 (-> 4x4, pythae's
    CelebA net), [64, 128] at 28 (-> 7x7); a list sets the number of convolutions. With
    `model.hidden_dims=[]` one linear layer joins the feature map and the code, as in pythae.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int] = (128,),
        channels: str | Sequence[int] = "auto",
        blocks: int = 2,
        residual_channels: int = 32,
        activation: str = "relu",
    ) -> None:
        self.image_shape = tuple(int(d) for d in image_shape)
        self.channels = strided_widths("resnet", self.image_shape, channels, lambda i: min(64 * 2**i, 128))
        if int(blocks) < 0 or int(residual_channels) < 1:
            raise UserError(
                f"model.net.blocks={blocks} must be >= 0 and model.net.residual_channels="
                f"{residual_channels} >= 1"
            )
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.blocks, self.residual_channels = int(blocks), int(residual_channels)
        self.activation = activation
        self.map_shape = map_shape(self.channels, self.image_shape)

    def residuals(self) -> list[nn.Module]:
        """The residual blocks at the smallest resolution, then the activation their sums skip."""
        width, inner = self.channels[-1], self.residual_channels
        return [
            *(Residual(width, inner, self.activation) for _ in range(self.blocks)),
            activation(self.activation),
        ]

    def encoder(self, out_features: int) -> nn.Module:
        flat = math.prod(self.map_shape)
        return nn.Sequential(
            *halvings([self.image_shape[0], *self.channels], self.activation),
            *self.residuals(),
            nn.Flatten(),
            *mlp([flat, *self.hidden_dims, out_features], self.activation),
        )

    def decoder(self, latent_dim: int, out_channels: int | None = None) -> nn.Module:
        flat = math.prod(self.map_shape)
        return nn.Sequential(
            *mlp([latent_dim, *reversed(self.hidden_dims), flat], self.activation),
            nn.Unflatten(1, self.map_shape),
            *self.residuals(),
            *halvings([*reversed(self.channels), out_channels or self.image_shape[0]], self.activation, True),
        )

    @property
    def grid(self) -> tuple[int, int]:
        """`(h, w)` of the spatial code."""
        return self.map_shape[1], self.map_shape[2]

    def spatial_encoder(self, channels: int) -> nn.Module:
        """The strided convolutions and residual blocks, then a 1x1 convolution to `channels`
        per grid position (the VQ-VAE paper's encoder)."""
        return nn.Sequential(
            *halvings([self.image_shape[0], *self.channels], self.activation),
            *self.residuals(),
            nn.Conv2d(self.channels[-1], channels, 1),
        )

    def spatial_decoder(self, channels: int, out_channels: int | None = None) -> nn.Module:
        """A 3x3 convolution from the code grid, residual blocks, the transposed strided convolutions."""
        return nn.Sequential(
            nn.Conv2d(channels, self.channels[-1], 3, padding=1),
            *self.residuals(),
            *halvings([*reversed(self.channels), out_channels or self.image_shape[0]], self.activation, True),
        )
