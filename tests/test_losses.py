"""Losses and the ELBO's reductions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent, Normal, kl_divergence

from aevae.config import UserError
from aevae.losses import MSE, Bernoulli, Gaussian, kl_std_normal


def test_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(16, 8, generator=g) * 2, torch.randn(16, 8, generator=g)
    q = Independent(Normal(mu, (0.5 * log_var).exp()), 1)
    p = Independent(Normal(torch.zeros(8), torch.ones(8)), 1)
    torch.testing.assert_close(kl_std_normal(mu, log_var), kl_divergence(q, p))
    assert (kl_std_normal(mu, log_var) > 0).all()
    assert kl_std_normal(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0  # q == p


def test_bernoulli_is_the_per_image_log_likelihood() -> None:
    g = torch.Generator().manual_seed(1)
    logits, x = torch.randn(5, 1, 28, 28, generator=g), torch.rand(5, 1, 28, 28, generator=g).round()
    expected = -TorchBernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Bernoulli()(logits, x), expected)


def test_gaussian_is_the_per_image_log_likelihood() -> None:
    g = torch.Generator().manual_seed(2)
    logits, x = torch.randn(5, 1, 28, 28, generator=g), torch.rand(5, 1, 28, 28, generator=g)
    loss = Gaussian(sigma=0.3)
    expected = -Normal(torch.sigmoid(logits), 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(loss(logits, x), expected)
    with pytest.raises(UserError, match="sigma"):
        Gaussian(sigma=0)


def test_mse_is_the_per_pixel_mean() -> None:
    logits = torch.zeros(2, 1, 28, 28)  # sigmoid -> 0.5 everywhere
    x = torch.zeros(2, 1, 28, 28)
    x[1] = 1.0
    torch.testing.assert_close(MSE()(logits, x), torch.tensor([0.25, 0.25]))
    assert not MSE.is_likelihood and Bernoulli.is_likelihood and Gaussian.is_likelihood


def test_elbo_is_per_image_and_batch_size_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training objective is mean_i[ sum_pixels BCE_i + sum_dims KL_i ]. The tutorial's
    `MSELoss()` (a per-pixel mean) + KL summed over the batch fails both checks below:
    its KL grows with the batch and its reconstruction is 784 times too small."""
    from aevae.models import MLP, VAE

    torch.manual_seed(0)
    vae = VAE(latent_dim=4, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[16])
    zeros = torch.zeros
    monkeypatch.setattr(torch, "randn", lambda *a, generator=None, **kw: zeros(*a, **kw))  # z = mu
    x = torch.rand(8, 1, 28, 28).round()

    def objective(batch: torch.Tensor) -> torch.Tensor:
        return vae.terms(batch)["loss"].mean()  # what training_step minimises

    torch.testing.assert_close(objective(torch.cat([x, x, x])), objective(x))
    mu, log_var = vae.posterior(x)
    q = Independent(Normal(mu, (0.5 * log_var).exp()), 1)
    prior = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    recon = -TorchBernoulli(logits=vae.decode(mu)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(objective(x), (recon + kl_divergence(q, prior)).mean())


def test_beta_weights_only_the_kl_in_the_loss() -> None:
    from aevae.models import MLP, VAE

    torch.manual_seed(0)
    vae = VAE(
        latent_dim=4, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[16], beta=4.0
    )
    torch.manual_seed(5)
    t = {k: v.mean().item() for k, v in vae.terms(torch.rand(6, 1, 28, 28)).items()}
    assert t["loss"] == pytest.approx(t["recon"] + 4.0 * t["kl"], rel=1e-6)
    assert t["neg_elbo"] == pytest.approx(t["recon"] + t["kl"], rel=1e-6)
    assert math.isfinite(t["loss"])


@pytest.mark.parametrize("loss", [Bernoulli(), Gaussian(sigma=0.2)])
def test_loss_of_many_draws_is_the_loss_of_each(loss) -> None:
    """`of_draws` scores S decodings of each image at once, with and without gradients."""
    logits, x = torch.randn(5, 3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    each = torch.stack([loss(draw, x) for draw in logits])  # [S, B]
    torch.testing.assert_close(loss.of_draws(logits, x), each)
    with torch.no_grad():
        torch.testing.assert_close(loss.of_draws(logits, x), each, rtol=1e-5, atol=1e-3)


# -- the discretized logistic (8-bit colour) ------------------------------------------------
def test_discretized_logistic_sums_to_one_over_the_256_levels() -> None:
    from aevae.losses import discretized_logistic_log_prob

    levels = torch.arange(256, dtype=torch.float64) / 255
    for mean, log_scale in [(0.0, -3.0), (0.9, -5.0), (-1.2, -1.0), (0.3, -7.0), (0.999, 0.5)]:
        m, s = (
            torch.full((256,), mean, dtype=torch.float64),
            torch.full((256,), log_scale, dtype=torch.float64),
        )
        total = discretized_logistic_log_prob(levels, m, s).exp().sum()
        assert abs(float(total) - 1) < 1e-6, (mean, log_scale, float(total))


def test_discretized_logistic_nll_equals_a_direct_computation() -> None:
    from aevae.losses import DiscretizedLogistic

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 4, 4), generator=gen).double() / 255
    params = torch.randn((3, 6, 4, 4), generator=gen, dtype=torch.float64)
    mean, log_scale = params[:, :3], params[:, 3:].clamp_min(-7)

    def cdf(v: torch.Tensor) -> torch.Tensor:  # the logistic's CDF on the [-1, 1] scale
        return torch.sigmoid((v - mean) / log_scale.exp())

    y = x * 2 - 1
    upper = torch.where(x >= 1, torch.ones_like(y), cdf(y + 1 / 255))
    lower = torch.where(x <= 0, torch.zeros_like(y), cdf(y - 1 / 255))
    direct = -(upper - lower).log().flatten(1).sum(1)
    assert torch.allclose(DiscretizedLogistic()(params, x), direct, rtol=1e-6)


def test_discretized_logistic_mixture_is_a_mixture_and_its_mean_is_in_range() -> None:
    from aevae.losses import DiscretizedLogistic

    gen = torch.Generator().manual_seed(1)
    k, c = 3, 3
    loss = DiscretizedLogistic(components=k)
    assert loss.out_channels(c) == k + 2 * k * c and DiscretizedLogistic().out_channels(c) == 2 * c
    params = torch.randn((2, loss.out_channels(c), 5, 5), generator=gen, dtype=torch.float64)
    x = torch.randint(0, 256, (2, c, 5, 5), generator=gen).double() / 255
    weights, means, scales = params[:, :k], params[:, k : k + k * c], params[:, k + k * c :]
    mixed = torch.stack(
        [
            DiscretizedLogistic().log_prob(
                torch.cat([means[:, i * c : (i + 1) * c], scales[:, i * c : (i + 1) * c]], 1), x
            )
            for i in range(k)
        ],
        1,
    )
    expected = -torch.logsumexp(torch.log_softmax(weights, 1) + mixed, 1).flatten(1).sum(1)
    assert torch.allclose(loss(params, x), expected)
    mean = loss.mean(params)
    assert mean.shape == x.shape and mean.min() >= 0 and mean.max() <= 1


def test_bits_per_dim_is_nats_over_dims_and_ln2() -> None:
    from aevae.losses import bits_per_dim

    assert bits_per_dim(3072 * math.log(2) * 4.5, (3, 32, 32)) == pytest.approx(4.5)
    # the same as the mean of -log2 P over every pixel value
    from aevae.losses import DiscretizedLogistic, discretized_logistic_log_prob

    params, x = torch.randn(2, 6, 4, 4), torch.randint(0, 256, (2, 3, 4, 4)) / 255
    per_value = -discretized_logistic_log_prob(x, params[:, :3], params[:, 3:].clamp_min(-7)) / math.log(2)
    bpd = bits_per_dim(DiscretizedLogistic()(params, x), (3, 4, 4))
    assert torch.allclose(bpd, per_value.flatten(1).mean(1))
