"""The code as a compressed image: uniform quantization of each latent dim, and its rate-distortion."""

from __future__ import annotations

import math

from torch import Tensor

from aevae.evaluation.reconstruction import decoding_quality
from aevae.models import Autoencoder


class UniformQuantizer:
    """`bits` per latent dim, 2**bits levels spread evenly over each dim's range [low, high]
    (taken from the training codes; codes outside it are clipped)."""

    def __init__(self, low: Tensor, high: Tensor, bits: int) -> None:
        self.low, self.bits = low, int(bits)
        self.step = (high - low).clamp_min(1e-12) / (2**self.bits - 1)

    @classmethod
    def fit(cls, codes: Tensor, bits: int) -> UniformQuantizer:
        return cls(codes.min(0).values, codes.max(0).values, bits)

    def encode(self, codes: Tensor) -> Tensor:
        """The integer level of each code value (what would be stored), as int64."""
        levels = ((codes - self.low) / self.step).round()
        return levels.clamp(0, 2**self.bits - 1).long()

    def decode(self, levels: Tensor) -> Tensor:
        return self.low + levels.to(self.step.dtype) * self.step


def compressed_quality(
    model: Autoencoder,
    images: Tensor,
    codes: Tensor,
    train_codes: Tensor,
    bits: int,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """Size and distortion of `images` stored as their `codes` quantized to `bits` per dim: bytes
    per image (latent_dim x bits / 8) against the raw uint8 pixels, and MSE/PSNR of the decodings
    (with the images' `labels`, which a conditional model stores next to the code)."""
    quantizer = UniformQuantizer.fit(train_codes, bits)
    quality = decoding_quality(model, quantizer.decode(quantizer.encode(codes)), images, labels=labels)
    code_bytes = codes.shape[1] * bits / 8
    raw_bytes = math.prod(images.shape[1:])
    return {
        "bits": bits,
        "code_bytes": code_bytes,
        "raw_bytes": raw_bytes,
        "ratio": raw_bytes / code_bytes,
        "mse": quality["mse"],
        "psnr": quality["psnr"],
    }
