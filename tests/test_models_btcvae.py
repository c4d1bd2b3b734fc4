"""β-TCVAE: the KL decomposition, its total correlation against brute force, training and refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal

from aevae.losses import Bernoulli
from aevae.models import MLP, VAE, BetaTCVAE
from aevae.models.btcvae import kl_decomposition, total_correlation
from zoo_fit import assert_round_trip, fit_and_test, refusal


def gaussians(m: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, d, generator=gen, dtype=torch.float64)
    log_var = torch.randn(m, d, generator=gen, dtype=torch.float64) * 0.5 - 1
    z = mu + torch.randn(m, d, generator=gen, dtype=torch.float64) * (0.5 * log_var).exp()
    return z, mu, log_var


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_the_three_terms_sum_to_the_kl_estimate_on_the_same_draws(estimator: str) -> None:
    z, mu, log_var = gaussians(32, 5)
    parts = kl_decomposition(z, mu, log_var, dataset_size=1000, estimator=estimator)
    estimate = Normal(mu, (0.5 * log_var).exp()).log_prob(z).sum(1) - Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(parts["mi"] + parts["tc"] + parts["dwkl"], estimate)
    assert not torch.allclose(parts["tc"], torch.zeros_like(parts["tc"]))


def brute_force_tc(z, mu, log_var, n: int, estimator: str) -> list[float]:  # noqa: ANN001
    """log q(z_i) - sum_k log q(z_ik), the aggregate q of the estimator's weights, by explicit loops."""
    m, d = len(z), len(z[0])
    if estimator == "mss":
        weight = [[1 / n if j == i else (n - 1) / (n * (m - 1)) for j in range(m)] for i in range(m)]
    else:
        weight = [[1 / (n * m)] * m for _ in range(m)]

    def density(i: int, j: int, k: int) -> float:
        var = math.exp(log_var[j][k])
        return math.exp(-((z[i][k] - mu[j][k]) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)

    result = []
    for i in range(m):
        joint = sum(weight[i][j] * math.prod(density(i, j, k) for k in range(d)) for j in range(m))
        marginals = [sum(weight[i][j] * density(i, j, k) for j in range(m)) for k in range(d)]
        result.append(math.log(joint) - sum(math.log(q) for q in marginals))
    return result


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_total_correlation_matches_a_brute_force_computation(estimator: str) -> None:
    z, mu, log_var = gaussians(6, 3, seed=1)
    tc = kl_decomposition(z, mu, log_var, dataset_size=50, estimator=estimator)["tc"]
    expected = brute_force_tc(z.tolist(), mu.tolist(), log_var.tolist(), 50, estimator)
    torch.testing.assert_close(tc, torch.tensor(expected, dtype=torch.float64))


def test_total_correlation_is_zero_for_a_factorized_posterior_set_and_large_for_correlated_codes() -> None:
    # posteriors centred on a grid (every combination of 5 values in each of 3 dims): their uniform
    # mixture, the aggregate posterior when the batch is the whole set (N = M), is a product
    values = torch.linspace(-2, 2, 5, dtype=torch.float64)
    grid = torch.cartesian_prod(values, values, values)  # [125, 3]
    diagonal = values.repeat_interleave(25)[:, None].expand(125, 3)  # all dims equal: dependent
    log_var = torch.full((125, 3), math.log(0.3**2), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    tcs = []
    for mu in (grid, diagonal):
        z = mu + 0.3 * torch.randn(125, 3, generator=gen, dtype=torch.float64)
        tcs.append(kl_decomposition(z, mu, log_var, dataset_size=125)["tc"])
    torch.testing.assert_close(tcs[0], torch.zeros(125, dtype=torch.float64))
    assert tcs[1].mean() > 2, tcs[1].mean()


def test_total_correlation_helper_works_on_any_gaussian_posterior() -> None:
    torch.manual_seed(0)
    kwargs = dict(latent_dim=4, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[16])
    images = torch.rand(40, 1, 28, 28)
    for model in (VAE(**kwargs), BetaTCVAE(**kwargs)):
        tc = total_correlation(model, images, batch_size=40, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            mu, log_var = model.posterior(images)
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        expected = kl_decomposition(mu + noise * (0.5 * log_var).exp(), mu, log_var, 40)["tc"].mean()
        assert tc == pytest.approx(expected.item(), rel=1e-5)
        halves = total_correlation(model, images, batch_size=20, generator=torch.Generator().manual_seed(3))
        assert math.isfinite(halves) and halves != tc  # two batches of 20: another estimate


def test_beta_weighs_only_the_total_correlation() -> None:
    torch.manual_seed(0)
    kwargs = dict(latent_dim=4, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[16])
    one, six = BetaTCVAE(beta=1.0, **kwargs), BetaTCVAE(beta=6.0, **kwargs)
    six.load_state_dict(one.state_dict())
    x = torch.rand(16, 1, 28, 28).round()
    a = one.terms(x, generator=torch.Generator().manual_seed(0))
    b = six.terms(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b["loss"] - a["loss"], 5 * a["tc"], atol=1e-3, rtol=0)
    torch.testing.assert_close(a["loss"], a["recon"] + a["mi"] + a["tc"] + a["dwkl"], atol=1e-3, rtol=0)
    torch.testing.assert_close(a["neg_elbo"], a["recon"] + a["kl"])  # the analytic KL


@pytest.mark.parametrize(("net", "loss"), [("mlp", "bce"), ("conv", "bce"), ("mlp", "gaussian")])
def test_trains_evaluates_and_round_trips(tmp_path: Path, net: str, loss: str) -> None:
    run, metrics = fit_and_test(tmp_path, "model=btcvae", f"model/net={net}", f"loss={loss}")
    assert {"test/mi", "test/tc", "test/dwkl", "test/neg_elbo", "test/kl"} <= set(metrics)
    assert_round_trip(run, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=mse"], "loss=mse is not a likelihood"),
        (["model.k=3"], "keep model.k=1 and model.free_bits=0"),
        (["model.free_bits=0.5"], "keep model.k=1 and model.free_bits=0"),
        (["model.dataset_size=1"], "model.dataset_size=1 must be the training set's size"),
        (["model.estimator=exact"], "model.estimator='exact' is not known"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    assert message in refusal(tmp_path, "model=btcvae", *overrides)
