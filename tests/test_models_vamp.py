"""The VampPrior VAE: its prior is the log-mean-exp over the pseudo-inputs' posteriors, used in the
ELBO, the importance weights and sampling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Normal

from aevae.commands.eval import _likelihood
from aevae.commands.train import build
from aevae.config import UserError, compose_config, user_error
from aevae.losses import Bernoulli, kl_std_normal
from aevae.models import MLP, VampVAE, load_checkpoint
from conftest import QUIET, SMALL_DATA, mnist_root


def make(**kwargs) -> VampVAE:
    torch.manual_seed(0)
    return VampVAE(
        latent_dim=6, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[32], **kwargs
    )


@pytest.mark.parametrize("log_var_shift", [0.0, -12.0])  # -12: components of std ~0.0025
def test_log_prior_is_the_log_mean_exp_over_the_pseudo_inputs_posteriors(log_var_shift: float) -> None:
    model = make(pseudo_inputs=5, pseudo_init_std=0.3)  # spread out: five distinct components
    model.encoder[-1].bias.data[6:] += log_var_shift
    z = torch.randn(3, 4, 6) * 2
    per_component = []
    with torch.no_grad():
        for u in model.pseudo_images():
            mu, log_var = model.posterior(u[None])
            per_component.append(
                Normal(mu[0].double(), (0.5 * log_var[0].double()).exp()).log_prob(z.double()).sum(-1)
            )
        expected = torch.logsumexp(torch.stack(per_component), 0) - math.log(5)
        torch.testing.assert_close(model.log_prior(z).double(), expected, rtol=1e-6, atol=1e-4)
    assert expected.std() > 0.1  # the draws' log-priors differ: not a constant by accident


def test_pseudo_inputs_start_in_the_image_range_and_are_trained() -> None:
    model = make(pseudo_inputs=4)
    u = model.pseudo_images()
    assert u.shape == (4, 1, 28, 28) and u.min() >= 0 and u.max() <= 1
    assert u.mean().item() == pytest.approx(0.05, abs=0.01)  # the reference code's N(0.05, 0.01)
    model.terms(torch.rand(8, 1, 28, 28).round())["loss"].mean().backward()
    assert model.pseudo_weights.grad.abs().sum() > 0  # the ELBO's KL reaches the prior


def test_prior_samples_come_from_the_mixture() -> None:
    model = make(pseudo_inputs=1)
    with torch.no_grad():
        mu, log_var = model.posterior(model.pseudo_images())
        z = model.prior_codes(20_000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20_000, 6)
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), log_var[0].exp(), atol=0, rtol=0.05)


def test_prior_samples_cover_every_component() -> None:
    model = make(pseudo_inputs=3)
    with torch.no_grad():
        model.pseudo_weights.copy_(torch.stack([torch.full((1, 28, 28), v) for v in (0.0, 0.5, 1.0)]))
        model.encoder[-1].bias.data[6:] = -8.0  # narrow components, so each draw names its own
        mu, _ = model.posterior(model.pseudo_images())
        z = model.prior_codes(3000, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(z, mu).argmin(1)
    counts = torch.bincount(nearest, minlength=3)
    assert (counts > 800).all(), counts  # uniform over the pseudo-inputs: ~1000 each


def test_log_weights_with_one_draw_are_minus_the_neg_elbo() -> None:
    model = make(pseudo_inputs=7)
    x = torch.rand(5, 1, 28, 28).round()
    with torch.no_grad():
        log_w = model.log_weights(x, 1, generator=torch.Generator().manual_seed(3))[0]
        terms = model.terms(x, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(log_w, -terms["neg_elbo"])
        torch.testing.assert_close(terms["neg_elbo"], terms["recon"] + terms["kl"])
        # the sampled KL, log q(z|x) - log p(z), is not the analytic KL to N(0, I)
        mu, log_var = model.posterior(x)
        analytic = -0.5 * (1 + log_var - mu.square() - log_var.exp()).sum(1)
        assert not torch.allclose(terms["kl"], analytic, atol=1e-2)


def test_refusals_are_one_line() -> None:
    with pytest.raises(UserError, match=r"model.free_bits=0$"):
        make(free_bits=0.5)
    with pytest.raises(UserError, match=r"model.pseudo_inputs=0 must be"):
        make(pseudo_inputs=0)


@pytest.mark.parametrize(
    "override,message",
    [
        ("loss=mse", "loss=mse is not a likelihood"),
        ("model.pseudo_inputs=0", "model.pseudo_inputs=0 is not allowed: expected an integer >= 1"),
        ("model.free_bits=1", "model=vamp samples its KL"),
    ],
)
def test_bad_config_is_refused_in_one_line(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(Exception) as err:
        build(compose_config(["model=vamp", override], output_dir=tmp_path))
    assert user_error(err.value).startswith(message)


def overrides(net: str, loss: str) -> list[str]:
    return [
        "model=vamp",
        f"model/net={net}",
        f"loss={loss}",
        "model.pseudo_inputs=8",
        f"data.root={mnist_root()}",
        *SMALL_DATA,
        *QUIET,
        "logger=none",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "model.hidden_dims=[32]",
    ]


@pytest.mark.parametrize("net,loss", [("mlp", "bce"), ("conv", "bce"), ("mlp", "gaussian")])
def test_trains_evaluates_and_round_trips_a_checkpoint(tmp_path: Path, net: str, loss: str) -> None:
    run = build(compose_config(overrides(net, loss), output_dir=tmp_path))
    run.trainer.fit(run.model, datamodule=run.datamodule)
    (metrics,) = run.trainer.test(run.model, datamodule=run.datamodule, verbose=False)
    assert run.trainer.global_step == 2 and all(math.isfinite(v) for v in metrics.values())
    assert {"test/kl", "test/neg_elbo", "test/bits_per_dim"} <= set(metrics)
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").to(run.model.device)
    model = run.model.eval()
    z = torch.randn(4, model.latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.pseudo_images(), model.pseudo_images())
        torch.testing.assert_close(loaded.log_prior(z), model.log_prior(z))
        samples = [m.prior_codes(5, generator=torch.Generator().manual_seed(0)) for m in (loaded, model)]
        torch.testing.assert_close(*samples)


def test_eval_reports_the_sampled_kl_not_the_one_to_a_standard_normal() -> None:
    model, x = make(pseudo_inputs=7).eval(), torch.rand(10, 1, 28, 28).round()
    model.encoder[-1].bias.data[:6] += 2.0  # posteriors and prior near 2: far from N(0, I)
    options = OmegaConf.create({"iw_samples": 50, "batch_size": 5})
    with torch.no_grad():
        report = _likelihood(model, x, None, options, torch.Generator().manual_seed(0))
        recon, kl = model.draws(x, 2000, generator=torch.Generator().manual_seed(1))
        analytic = kl_std_normal(*model.posterior(x)).mean().item()
    assert report["iw_nll"] <= report["neg_elbo"]
    assert report["kl"] == pytest.approx(kl.mean().item(), abs=0.5)
    assert report["neg_elbo"] == pytest.approx((recon + kl).mean().item(), abs=1.0)
    assert abs(report["kl"] - analytic) > 1.0
