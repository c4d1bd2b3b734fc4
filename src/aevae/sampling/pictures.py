"""What a model makes of given codes and images, as tensors and grids: decodings, interpolation
paths, reconstruction rows, and seeded picks of data. The TensorBoard callbacks, `aevae-sample`,
`aevae-eval` and the Python API draw the same pictures from here."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid

from aevae.models import Autoencoder
from aevae.sampling.latents import INTERPOLATIONS, labels_for, lerp


def fixed_indices(n: int, count: int, seed: int) -> Tensor:
    """`count` distinct indices into `range(n)`: the same ones for the same seed, in every run."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(count, n)]


def decoded_images(model: Autoencoder, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """The mean images the decoder gives for codes `z` (and, for a conditional model, `labels`)."""
    return model.likelihood.mean(model.decode(z, labels_for(model, labels)))


def decoded_paths(
    model: Autoencoder,
    start: Tensor,
    end: Tensor,
    steps: int,
    mode: str = "slerp",
    labels: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Decodings of `steps` points (both ends included) on the path from the code of each
    `start` image to that of its `end` image: `[P, steps, C, H, W]`. A conditional model gets
    the `(start, end)` images' `labels`; its decoder's label goes from one one-hot to the other
    along the path (linearly), so both ends are the images' reconstructions."""
    t = torch.linspace(0, 1, steps, device=start.device)
    first, last = labels if model.conditional and labels is not None else (None, None)
    path = INTERPOLATIONS[mode](model.encode(start, first), model.encode(end, last), t)  # [P, S, D]
    weights = None if first is None else lerp(model.one_hot(first), model.one_hot(last), t).flatten(0, 1)
    return decoded_images(model, path.flatten(0, 1), weights).unflatten(0, path.shape[:2])


def per_class(model: Autoencoder, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Each of `codes [N, D]` once per class of a conditional model: `[N * num_classes, D]` and the
    labels (`sample_labels`), so a `num_classes`-wide grid has a code per row, a class per column."""
    return codes.repeat_interleave(model.num_classes, 0), model.sample_labels(len(codes) * model.num_classes)


def reconstruction_grid(model: Autoencoder, x: Tensor, per_row: int, labels: Tensor | None = None) -> Tensor:
    """Rows of `per_row` images, each row followed by their reconstructions (`len(x)` a multiple of
    it); `labels`: the images' classes, for a conditional model."""
    recon = model(x, labels_for(model, labels))
    rows = torch.stack([x, recon]).unflatten(1, (-1, per_row))  # [2, rows, per_row, ...]
    return make_grid(rows.transpose(0, 1).flatten(0, 2), nrow=per_row, pad_value=0.5)


def interpolation_grid(
    model: Autoencoder,
    start: Tensor,
    end: Tensor,
    steps: int,
    mode: str,
    labels: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """A row per pair: the start image, `steps` decodings along the path, the end image."""
    decoded = decoded_paths(model, start, end, steps, mode, labels)
    rows = torch.cat([start[:, None], decoded, end[:, None]], dim=1)  # [P, S + 2, C, H, W]
    return make_grid(rows.flatten(0, 1), nrow=steps + 2, pad_value=0.5)
