"""The judge's Fréchet distance: zero for one set, growing with noise, FID's formula exactly."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import nn

from aevae.evaluation.frechet import JudgeFeatures, frechet_distance


class Linear(nn.Module):
    """A fixed random projection of the pixels: features whose statistics are easy to check."""

    def __init__(self, pixels: int, num_features: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(pixels, num_features)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand((n, 1, 6, 6), generator=torch.Generator().manual_seed(seed))


def test_identical_sets_are_at_distance_zero_and_noise_moves_them_apart() -> None:
    torch.manual_seed(0)
    features = Linear(36)
    real = images(400, 1)
    assert abs(frechet_distance(features, real, real.clone())) < 1e-4
    distances = [
        frechet_distance(features, real, (real + level * torch.randn_like(real)).clamp(0, 1))
        for level in (0.05, 0.2, 0.5)
    ]
    assert 0 < distances[0] < distances[1] < distances[2]


def test_it_is_the_formula_on_the_features() -> None:
    torch.manual_seed(1)
    features = Linear(36)
    real, fake = images(300, 2), images(200, 3) ** 2
    with torch.no_grad():
        fr, ff = features(real).double().numpy(), features(fake).double().numpy()
    mu_r, mu_f = fr.mean(0), ff.mean(0)
    cov_r, cov_f = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    direct = ((mu_r - mu_f) ** 2).sum() + np.trace(cov_r + cov_f - 2 * linalg.sqrtm(cov_r @ cov_f).real)
    assert abs(frechet_distance(features, real, fake) - direct) < 1e-3 * max(1.0, direct)


def test_judge_features_are_the_code_its_head_reads() -> None:
    from aevae.models.nets import MLP

    class Judge(nn.Module):
        latent_dim = 4

        def __init__(self) -> None:
            super().__init__()
            self.encoder = MLP(image_shape=(1, 6, 6), hidden_dims=[8]).encoder(4)
            self.head = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3))

    judge = Judge()
    features = JudgeFeatures(judge)
    x = images(5, 4)
    assert features.num_features == 4 and not judge.training
    assert torch.equal(features(x), judge.head[0](judge.encoder(x)))
