"""Fréchet distance between test images and samples, in the feature space of the data set's judge.

FID's formula, ||mu_r - mu_s||^2 + Tr(S_r + S_s - 2 (S_r S_s)^(1/2)), computed by torchmetrics'
`FrechetInceptionDistance` with the judge (a classifier trained on the same data set, see
`aevae.evaluation.judge`) as its feature extractor instead of Inception-v3, whose weights
cannot be had offline. Its values compare models on one data set and one judge only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class JudgeFeatures(nn.Module):
    """The standardized code a judge's head reads (`[N, latent_dim]`), from images in [0, 1]."""

    def __init__(self, judge: nn.Module) -> None:
        super().__init__()
        self.judge = judge.eval()
        self.num_features = int(judge.latent_dim)  # torchmetrics reads it instead of a dummy pass

    def forward(self, images: Tensor) -> Tensor:
        return self.judge.head[0](self.judge.encoder(images))


@torch.no_grad()
def frechet_distance(features: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 1000) -> float:
    """The Fréchet distance between the Gaussians fitted to `features` of `real` and `fake`
    (float images `[N, C, H, W]` in [0, 1], N >= 2 each)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=features, normalize=True).to(real.device)
    for images, is_real in ((real, True), (fake, False)):
        for batch in images.split(batch_size):
            metric.update(batch, real=is_real)
    return float(metric.compute())
