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
