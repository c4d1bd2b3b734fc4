"""How well decoded codes reproduce images: MSE, Bernoulli NLL and PSNR."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio

from aevae.losses import pixel_mse
from aevae.models import Autoencoder
from aevae.sampling.latents import batches, labels_for


def per_image_psnr(images: Tensor, targets: Tensor) -> Tensor:
    """PSNR in dB of each image against its target, pixels in [0, 1]: `[B]`."""
    return peak_signal_noise_ratio(images, targets, data_range=1.0, reduction="none", dim=(1, 2, 3))


def decoding_quality(
    model: Autoencoder, codes: Tensor, targets: Tensor, batch_size: int = 1000, labels: Tensor | None = None
) -> dict[str, float]:
    """Means over the images of the decodings of `codes` against `targets`: per-pixel `mse`,
    `bce` (Bernoulli NLL, nats per image) and `psnr` (dB); `labels`: the targets' classes, which
    a conditional model decodes with."""
    totals = {"mse": 0.0, "bce": 0.0, "psnr": 0.0}
    parts = batches(codes, labels_for(model, labels), batch_size)
    for (z, y), x in zip(parts, targets.split(batch_size), strict=True):
        logits = model.decode(z, y)
        mean = model.likelihood.mean(logits)
        totals["mse"] += pixel_mse(mean, x).sum().item()
        totals["bce"] += model.likelihood.bce(logits, x).sum().item()
        totals["psnr"] += per_image_psnr(mean, x).sum().item()
    return {name: total / len(codes) for name, total in totals.items()}
