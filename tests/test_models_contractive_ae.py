"""Contractive AE: the exact penalty against autograd's Jacobian, the Hutchinson estimate's
unbiasedness, the penalty's gradient, training and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.autograd.functional import jacobian

from aevae.losses import Bernoulli
from aevae.models import MLP, ContractiveAE, Conv
from aevae.models.contractive_ae import exact_jacobian_norm, hutchinson_jacobian_norm
from zoo_fit import assert_round_trip, fit_and_test, refusal


def make(net: type = MLP, **kwargs) -> ContractiveAE:  # noqa: ANN003
    torch.manual_seed(0)
    return ContractiveAE(
        latent_dim=5, net=net, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[16], **kwargs
    )


def autograd_norm(model: ContractiveAE, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """||dz/dx||_F^2 of each image, from autograd's full Jacobian of one image at a time."""
    return torch.stack(
        [
            jacobian(lambda one: model.encode(one[None])[0], image, create_graph=create_graph).square().sum()
            for image in x
        ]
    )


@pytest.mark.parametrize("net", [MLP, Conv])
def test_exact_penalty_equals_autograds_jacobian_norm(net: type) -> None:
    model, x = make(net, latent_activation="tanh"), torch.rand(3, 1, 28, 28)
    z, penalty = exact_jacobian_norm(model.encode, x)
    torch.testing.assert_close(penalty, autograd_norm(model, x))
    torch.testing.assert_close(z, model.encode(x))
    assert model.terms(x)["contraction"].shape == (3,)


def test_the_penalty_trains_through_its_gradient() -> None:
    model, x = make(latent_activation="tanh"), torch.rand(3, 1, 28, 28)
    weight = model.encoder[1].weight
    (ours,) = torch.autograd.grad(exact_jacobian_norm(model.encode, x)[1].sum(), weight)
    (reference,) = torch.autograd.grad(autograd_norm(model, x, create_graph=True).sum(), weight)
    torch.testing.assert_close(ours, reference)
    assert ours.abs().sum() > 0


def test_hutchinson_estimate_is_unbiased() -> None:
    model, x = make(), torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        exact = exact_jacobian_norm(model.encode, x)[1]
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([hutchinson_jacobian_norm(model.encode, x, 8, gen)[1] for _ in range(100)]).detach()
    error = draws.std(0) / len(draws) ** 0.5  # of the mean of 100 estimates from 8 projections each
    assert ((draws.mean(0) - exact).abs() < 4 * error).all() and (draws.std(0) > 0).all()


def test_above_exact_up_to_the_penalty_is_estimated() -> None:
    x = torch.rand(4, 1, 28, 28)
    exact, estimated = make(exact_up_to=16), make(exact_up_to=4, projections=2)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(exact.terms(x)["contraction"], exact_jacobian_norm(exact.encode, x)[1])
    expected = hutchinson_jacobian_norm(estimated.encode, x, 2, torch.Generator().manual_seed(0))[1]
    torch.testing.assert_close(estimated.terms(x, generator=gen)["contraction"], expected)


@pytest.mark.parametrize(("net", "latent_dim"), [("mlp", 8), ("conv", 8), ("mlp", 32)])
def test_trains_evaluates_and_round_trips(tmp_path: Path, net: str, latent_dim: int) -> None:
    run, metrics = fit_and_test(
        tmp_path, "model=contractive_ae", f"model/net={net}", f"latent_dim={latent_dim}"
    )
    assert {"test/contraction", "test/recon"} <= set(metrics)  # under Lightning's inference mode too
    assert metrics["test/contraction"] > 0
    assert_round_trip(run, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.contraction=-0.1"], "model.contraction=-0.1 must be a number >= 0"),
        (["model.projections=0"], "model.projections=0 must be an integer >= 1"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    assert message in refusal(tmp_path, "model=contractive_ae", *overrides)
