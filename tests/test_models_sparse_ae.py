"""Sparse AE: the penalties against hand computations, a sparser code with a large weight, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aevae.losses import Bernoulli
from aevae.models import MLP, SparseAE
from zoo_fit import assert_round_trip, fit_and_test, refusal


def make(**kwargs) -> SparseAE:  # noqa: ANN003
    torch.manual_seed(0)
    return SparseAE(
        latent_dim=6, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[32], **kwargs
    )


def test_l1_penalty_equals_a_hand_computation() -> None:
    model, x = make(sparsity=0.5), torch.rand(4, 1, 28, 28)
    terms, z = model.terms(x), model.encode(x)
    expected = [sum(abs(v) for v in row) for row in z.tolist()]
    torch.testing.assert_close(terms["penalty"], torch.tensor(expected))
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.5 * terms["penalty"])


def test_rate_penalty_equals_a_hand_computation() -> None:
    model, x = make(penalty="kl", target_rate=0.1), torch.rand(5, 1, 28, 28)
    z = model.encode(x)
    assert ((z > 0) & (z < 1)).all()  # sigmoid units
    rates = z.mean(0).tolist()
    expected = sum(0.1 * math.log(0.1 / r) + 0.9 * math.log(0.9 / (1 - r)) for r in rates)
    torch.testing.assert_close(model.terms(x)["penalty"], torch.full((5,), expected))


def sparsity_after_training(weight: float) -> float:
    """The fraction of silent code entries after 50 steps on one batch of random binary images."""
    model = make(sparsity=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    for _ in range(50):
        optimizer.zero_grad()
        model.terms(images)["loss"].mean().backward()
        optimizer.step()
    with torch.no_grad():
        return model.code_sparsity(model.encode(images)).mean().item()


def test_a_large_weight_gives_a_sparser_code() -> None:
    free, penalized = sparsity_after_training(0.0), sparsity_after_training(5.0)
    assert free < 0.1 and penalized > 0.5, (free, penalized)


@pytest.mark.parametrize(
    ("net", "loss", "penalty"), [("mlp", "bce", "l1"), ("conv", "bce", "l1"), ("mlp", "mse", "kl")]
)
def test_trains_evaluates_and_round_trips(tmp_path: Path, net: str, loss: str, penalty: str) -> None:
    overrides = ("model=sparse_ae", f"model/net={net}", f"loss={loss}", f"model.penalty={penalty}")
    run, metrics = fit_and_test(tmp_path, *overrides)
    assert {"test/sparsity", "test/penalty"} <= set(metrics) and 0 <= metrics["test/sparsity"] <= 1
    assert_round_trip(run, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.penalty=l2"], "model.penalty='l2' is not known; use one of l1, kl"),
        (
            ["model.penalty=kl", "model.target_rate=1.5"],
            "model.target_rate=1.5 must be a firing rate in (0, 1)",
        ),
        (["model.penalty=kl", "model.latent_activation=relu"], "leave model.latent_activation=none"),
        (["model.sparsity=-1"], "model.sparsity=-1 must be a number >= 0"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    assert message in refusal(tmp_path, "model=sparse_ae", *overrides)
