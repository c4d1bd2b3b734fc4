"""A learned prior over a trained VQ-VAE's code grid: a small gated PixelCNN over its indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevae.config import UserError
from aevae.metrics import CodebookPerplexity
from aevae.models.base import Autoencoder
from aevae.models.vqvae import VQVAE


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel's last row (`mask="row"`) or last column (`"col"`) is zero,
    so that the output at a position does not see the input there."""

    def __init__(self, *args: Any, mask: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep = torch.ones_like(self.weight)
        if mask == "row":
            keep[:, :, -1] = 0
        elif mask == "col":
            keep[:, :, :, -1] = 0
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.keep, self.bias, self.stride, self.padding)


def gate(features: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) of the two halves of the channels."""
    a, b = features.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """A gated PixelCNN layer (van den Oord et al., 2016, "Conditional Image Generation with
    PixelCNN Decoders"): a vertical stack that sees the rows above, a horizontal stack that sees
    the pixels to the left in the row, and the vertical's features fed into the horizontal.
    The first layer excludes the current position itself (mask A): its horizontal output has
    no skip connection, which would pass the position's own input on.

    `[B, C, h, w]` vertical and horizontal features in, the same out.
    """

    def __init__(self, channels: int, kernel_size: int, first: bool) -> None:
        super().__init__()
        half = kernel_size // 2
        # padded on both sides and cropped to the first h rows (w columns): output (i, j) sees
        # input rows i - half .. i (columns j - half .. j), less the last one in the first layer
        vertical_kernel = (half + 1, kernel_size)
        self.vertical = MaskedConv2d(
            channels, 2 * channels, vertical_kernel, padding=(half, half), mask="row" if first else None
        )
        self.horizontal = MaskedConv2d(
            channels, 2 * channels, (1, half + 1), padding=(0, half), mask="col" if first else None
        )
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.skip = not first

    def forward(self, vertical: Tensor, horizontal: Tensor) -> tuple[Tensor, Tensor]:
        h, w = vertical.shape[-2:]
        v = self.vertical(vertical)[:, :, :h]
        out = self.out(gate(self.horizontal(horizontal)[:, :, :, :w] + self.vertical_to_horizontal(v)))
        return gate(v), out + horizontal if self.skip else out


class GatedPixelCNN(nn.Module):
    """An autoregressive categorical model of index grids `[B, h, w]` (values in [0, K)), raster
    order: embedding, `layers` gated layers (`kernel_size` wide), two 1x1 convolutions to K logits."""

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 6, kernel_size: int = 5) -> None:
        super().__init__()
        self.num_codes = int(num_codes)
        self.embedding = nn.Embedding(self.num_codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel_size, first=i == 0) for i in range(layers))
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, self.num_codes, 1)
        )

    def forward(self, indices: Tensor) -> Tensor:
        """Logits `[B, K, h, w]` of each position given the ones before it."""
        vertical = horizontal = self.embedding(indices).movedim(-1, 1)
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal)
        return self.head(horizontal)

    def nll(self, indices: Tensor) -> Tensor:
        """-log p(indices) per grid `[B]`, nats."""
        return F.cross_entropy(self(indices), indices, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, grid: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """`n` ancestral draws `[n, h, w]`, position by position in raster order."""
        device = self.embedding.weight.device
        indices = torch.zeros(n, *grid, dtype=torch.long, device=device)
        for i in range(grid[0]):
            for j in range(grid[1]):
                # the rows below i cannot change row i's logits: leave them out (half the work)
                probs = self(indices[:, : i + 1])[:, :, i, j].float().softmax(1)
                indices[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return indices


def frozen_vqvae(path: str) -> VQVAE:
    """The VQ-VAE of the run dir or checkpoint `path`, its weights and codebook fixed."""
    from aevae.models.checkpoint import load_checkpoint, resolve_checkpoint

    vqvae = load_checkpoint(resolve_checkpoint(path, key="pretrained"), key="pretrained", expect=VQVAE)
    return vqvae.requires_grad_(False).eval()


class VQPrior(Autoencoder):
    """The VQ-VAE of `pretrained` (frozen) with a learned prior p(c) over its code grid c: a
    gated PixelCNN, trained on the per-image NLL of the grids its encoder gives the images,

        loss = -log p(c(x)) = -sum_{i,j} log p(c_ij | c_<ij)   (nats per image).

    As an autoencoder it is that VQ-VAE, with the PixelCNN as its prior: `encode`/`decode` are
    the VQ-VAE's, `prior_codes` draws grids ancestrally and looks up their codebook vectors. So
    `aevae-sample` and `aevae-eval` of this run show and score the VQ-VAE's samples under the
    learned prior (those of the VQ-VAE's own run draw uniform codes).
    """

    has_prior = True

    def __init__(
        self,
        pretrained: str | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float = 1e-3,
        channels: int = 64,
        layers: int = 6,
        kernel_size: int = 5,
        image_shape: Sequence[int] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        if not pretrained:
            raise UserError(
                "model=vq_prior needs pretrained=RUN_DIR, the run of a trained model=vqvae: "
                "aevae-train experiment=vqvae_prior pretrained=RUN_DIR"
            )
        if int(channels) < 1 or int(layers) < 1 or int(kernel_size) < 3 or int(kernel_size) % 2 == 0:
            raise UserError(
                f"model.channels={channels} and model.layers={layers} must be >= 1 and "
                f"model.kernel_size={kernel_size} odd and >= 3"
            )
        vqvae = frozen_vqvae(pretrained)
        if image_shape is not None and tuple(image_shape) != vqvae.image_shape:
            raise UserError(
                f"pretrained={pretrained} was trained on images {list(vqvae.image_shape)}, these are "
                f"{list(image_shape)}; train the prior on the VQ-VAE's data"
            )
        super().__init__(
            vqvae.latent_dim,
            net=lambda **_: vqvae,  # build() takes the frozen VQ-VAE as the networks
            likelihood=vqvae.likelihood,
            optimizer=optimizer,
            hidden_dims=(),
            lr=lr,
            image_shape=vqvae.image_shape,
            scheduler=scheduler,
        )
        self.pixelcnn = GatedPixelCNN(vqvae.codebook_size, channels, layers, kernel_size)
        self.add_metric("perplexity", lambda: CodebookPerplexity(vqvae.codebook_size))

    def build(self, nets: Any, out_channels: int) -> None:
        self.vqvae: VQVAE = nets

    def train(self, mode: bool = True) -> VQPrior:
        """Training mode for the PixelCNN; the VQ-VAE stays frozen (no codebook updates)."""
        super().train(mode)
        self.vqvae.eval()
        return self

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.vqvae.encode(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.vqvae.decode(z)

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """Flat codes `[n, D * h * w]` of grids drawn from the PixelCNN."""
        return self.vqvae.codes_of(self.pixelcnn.sample(n, self.vqvae.grid, generator))

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        with torch.no_grad():
            indices = self.vqvae.indices(x)
        return {"loss": self.pixelcnn.nll(indices)}

    def evaluate(
        self, batch: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        values = self.vqvae.evaluate(batch, generator)  # the frozen VQ-VAE's reconstructions, code usage
        values["loss"] = self.pixelcnn.nll(values["perplexity"])  # its index grids, [B, h, w]
        return values
