"""WAE-MMD: the MMD estimate against a hand computation, its unbiasedness, training and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aevae.losses import Bernoulli
from aevae.models import MLP, WAE
from aevae.models.wae import SCALES, mmd
from zoo_fit import assert_round_trip, fit_and_test, refusal


def hand_mmd(a: list[list[float]], b: list[list[float]]) -> float:
    """The U-statistic of MMD^2 with the multi-scale IMQ kernel, by explicit double loops."""
    d = len(a[0])

    def k(u: list[float], v: list[float]) -> float:
        squared = sum((ui - vi) ** 2 for ui, vi in zip(u, v, strict=True))
        return sum(2 * d * s / (2 * d * s + squared) for s in SCALES)

    n, m = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    bb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    ab = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return aa + bb - 2 * ab


def test_mmd_equals_a_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(7, 3, generator=gen, dtype=torch.float64),
        torch.randn(5, 3, generator=gen).double() + 1,
    )
    assert mmd(a, b).item() == pytest.approx(hand_mmd(a.tolist(), b.tolist()), rel=1e-9)


def test_mmd_is_unbiased_for_equal_distributions_and_positive_for_shifted_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = 2000  # batches of 16 codes against 16 prior draws, 8 dims
    same = [mmd(torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)) for _ in range(draws)]
    same = torch.stack(same)
    # unbiased: the mean is 0 within its standard error (a biased V-statistic sits ~5 errors above)
    assert abs(same.mean()) < 3 * same.std() / draws**0.5 and (same < 0).any()
    shifted = torch.stack(
        [mmd(torch.randn(16, 8, generator=gen) + 0.5, torch.randn(16, 8, generator=gen)) for _ in range(200)]
    )
    assert shifted.mean() > 10 * same.std() / draws**0.5 and shifted.mean() > 0


def test_the_batch_mmd_is_every_images_term_and_weighted_in_the_loss() -> None:
    torch.manual_seed(0)
    model = WAE(
        latent_dim=4,
        net=MLP,
        likelihood=Bernoulli(),
        optimizer=torch.optim.Adam,
        hidden_dims=[16],
        mmd_weight=3,
    )
    x = torch.rand(8, 1, 28, 28)
    terms = model.terms(x, generator=torch.Generator().manual_seed(1))
    prior = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(terms["mmd"], mmd(model.encode(x), prior).expand(8))
    torch.testing.assert_close(terms["loss"], terms["recon"] + 3 * terms["mmd"])
    assert model.has_prior and model.prior_codes(5).shape == (5, 4)


@pytest.mark.parametrize(("net", "loss"), [("mlp", "bce"), ("conv", "bce"), ("mlp", "mse")])
def test_trains_evaluates_and_round_trips(tmp_path: Path, net: str, loss: str) -> None:
    run, metrics = fit_and_test(tmp_path, "model=wae", f"model/net={net}", f"loss={loss}")
    assert {"test/mmd", "test/recon", "test/loss"} <= set(metrics)
    assert_round_trip(run, tmp_path)


def test_refuses_a_negative_weight(tmp_path: Path) -> None:
    assert (
        refusal(tmp_path, "model=wae", "model.mmd_weight=-1") == "model.mmd_weight=-1 must be a number >= 0"
    )
