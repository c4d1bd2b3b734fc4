"""The two-stochastic-layer VAE/IWAE: its log-weights, its bounds and its ancestral prior."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Bernoulli as BernoulliDist
from torch.distributions import Normal

from aevae.commands.eval import _likelihood
from aevae.commands.train import build
from aevae.config import UserError, compose_config, user_error
from aevae.losses import Bernoulli, kl_std_normal, log_mean_exp
from aevae.models import HVAE, MLP, load_checkpoint
from conftest import QUIET, SMALL_DATA, mnist_root


def make(**kwargs) -> HVAE:
    torch.manual_seed(0)
    kwargs = {"latent_dim_2": 4, "hidden_dims_2": [16], **kwargs}
    return HVAE(
        latent_dim=8, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[32], **kwargs
    )


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_log_weights_are_the_two_layer_joint_over_the_posterior() -> None:
    """Recomputed with torch.distributions from the same noise, drawn in the model's order."""
    model, x, k = make(), torch.rand(3, 1, 28, 28).round(), 4
    with torch.no_grad():
        log_w = model.log_weights(x, k, generator=seeded(7))
        noise = seeded(7)
        mu1, log_var1 = model.encoder(x).chunk(2, dim=1)
        q1 = Normal(mu1, (0.5 * log_var1).exp())
        z1 = q1.loc + q1.scale * torch.randn((k, 3, 8), generator=noise)
        mu2, log_var2 = model.encoder_2(z1).chunk(2, dim=-1)
        q2 = Normal(mu2, (0.5 * log_var2).exp())
        z2 = q2.loc + q2.scale * torch.randn((k, 3, 4), generator=noise)
        p_mu1, p_log_var1 = model.decoder_2(z2).chunk(2, dim=-1)
        log_px = BernoulliDist(logits=model.decoder(z1.flatten(0, 1))).log_prob(x.repeat(k, 1, 1, 1))
        expected = (
            log_px.flatten(1).sum(1).view(k, 3)
            + Normal(p_mu1, (0.5 * p_log_var1).exp()).log_prob(z1).sum(-1)
            + Normal(0.0, 1.0).log_prob(z2).sum(-1)
            - q1.log_prob(z1).sum(-1)
            - q2.log_prob(z2).sum(-1)
        )
    assert log_w.shape == (k, 3)
    torch.testing.assert_close(log_w, expected, rtol=1e-5, atol=1e-3)


def test_iw_bound_with_one_draw_is_the_elbo() -> None:
    elbo, iw = make(), make(bound="iw", k=1)
    iw.load_state_dict(elbo.state_dict())
    x = torch.rand(6, 1, 28, 28).round()
    with torch.no_grad():
        iw_terms = iw.terms(x, generator=seeded(1))
        elbo_terms = elbo.terms(x, generator=seeded(1))
        log_w = elbo.log_weights(x, 1, generator=seeded(1))[0]
    torch.testing.assert_close(iw_terms["loss"], iw_terms["neg_elbo"])
    torch.testing.assert_close(iw_terms["loss"], elbo_terms["loss"])
    torch.testing.assert_close(log_w, -elbo_terms["neg_elbo"])
    torch.testing.assert_close(elbo_terms["neg_elbo"], elbo_terms["recon"] + elbo_terms["kl"])


def test_bound_tightens_with_k_on_average() -> None:
    model = make()
    x = torch.rand(64, 1, 28, 28).round()
    with torch.no_grad():
        bounds = {k: log_mean_exp(model.log_weights(x, k, seeded(2))).mean().item() for k in (1, 10, 100)}
    assert bounds[1] < bounds[10] < bounds[100]


def test_iw_loss_is_below_the_elbo_on_the_same_draws() -> None:
    model = make(bound="iw", k=8)
    with torch.no_grad():
        terms = model.terms(torch.rand(16, 1, 28, 28).round(), generator=seeded(4))
    assert (terms["loss"] <= terms["neg_elbo"] + 1e-4).all() and (terms["loss"] < terms["neg_elbo"]).any()


def test_prior_codes_are_ancestral_draws() -> None:
    model = make()
    with torch.no_grad():
        z1 = model.prior_codes(5000, generator=seeded(5))
        again = model.prior_codes(5000, generator=seeded(5))
        noise = seeded(5)
        z2 = torch.randn((5000, 4), generator=noise)
        mu1, log_var1 = model.decoder_2(z2).chunk(2, dim=-1)
        expected = mu1 + (0.5 * log_var1).exp() * torch.randn((5000, 8), generator=noise)
    assert z1.shape == (5000, 8)
    torch.testing.assert_close(z1, again)
    torch.testing.assert_close(z1, expected)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bound": "iwae"}, r"model.bound='iwae' is not known; use elbo"),
        ({"bound": "iw", "beta": 2.0}, r"keep model.beta=1"),
        ({"free_bits": 0.5}, r"set model.free_bits=0$"),
        ({"latent_dim_2": 0}, r"model.latent_dim_2=0 must be"),
    ],
)
def test_refusals_are_one_line(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        make(**kwargs)


@pytest.mark.parametrize(
    "override,message",
    [
        ("loss=mse", "loss=mse is not a likelihood"),
        ("model.bound=iwae", "model.bound='iwae' is not allowed: expected elbo or iw"),
        ("model.hidden_dims_2=[0]", "model.hidden_dims_2=[0] is not allowed"),
        ("model.latent_dim_2=0", "model.latent_dim_2=0 is not allowed"),
    ],
)
def test_bad_config_is_refused_in_one_line(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(Exception) as err:
        build(compose_config(["model=hvae", override], output_dir=tmp_path))
    assert user_error(err.value).startswith(message)


def test_paper_experiment_composes(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=iwae_paper_hvae", "model.k=50", "model.bound=iw"], output_dir=tmp_path)
    assert cfg.model._target_ == "aevae.models.HVAE" and cfg.latent_dim == 100
    assert list(cfg.model.hidden_dims) == [100, 100] and list(cfg.model.hidden_dims_2) == [50, 50]
    assert cfg.model.latent_dim_2 == 50 and cfg.model.activation_2 == "tanh" and cfg.data.batch_size == 20


@pytest.mark.parametrize(
    "net,loss,extra",
    [
        ("mlp", "bce", []),
        ("conv", "bce", []),
        ("mlp", "gaussian", []),
        ("mlp", "bce", ["model.bound=iw", "model.k=3"]),
    ],
)
def test_trains_evaluates_and_round_trips_a_checkpoint(
    tmp_path: Path, net: str, loss: str, extra: list[str]
) -> None:
    overrides = [
        "model=hvae",
        f"model/net={net}",
        f"loss={loss}",
        f"data.root={mnist_root()}",
        *SMALL_DATA,
        *QUIET,
        "logger=none",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "model.hidden_dims=[32]",
        *extra,
    ]
    run = build(compose_config(overrides, output_dir=tmp_path))
    run.trainer.fit(run.model, datamodule=run.datamodule)
    (metrics,) = run.trainer.test(run.model, datamodule=run.datamodule, verbose=False)
    assert run.trainer.global_step == 2 and all(math.isfinite(v) for v in metrics.values())
    assert {"test/kl", "test/neg_elbo", "test/bits_per_dim"} <= set(metrics)
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").to(run.model.device)
    model, x = run.model.eval(), torch.rand(3, 1, 28, 28).round()
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_weights(x, 2, seeded(0)), model.log_weights(x, 2, seeded(0)))
        torch.testing.assert_close(loaded.prior_codes(4, seeded(0)), model.prior_codes(4, seeded(0)))


def test_eval_reports_the_sampled_kl_of_both_layers() -> None:
    model, x = make().eval(), torch.rand(10, 1, 28, 28).round()
    model.encoder[-1].bias.data[:8] += 2.0  # q(z1|x) and p(z1|z2) near 2: far from N(0, I)
    model.decoder_2[-1].bias.data[:8] += 2.0
    options = OmegaConf.create({"iw_samples": 50, "batch_size": 5})
    with torch.no_grad():
        report = _likelihood(model, x, None, options, seeded(0))
        recon, kl = model.draws(x, 2000, generator=seeded(1))
        first_layer_only = kl_std_normal(*model.posterior(x)).mean().item()
    assert report["iw_nll"] <= report["neg_elbo"]
    assert report["kl"] == pytest.approx(kl.mean().item(), abs=0.5)
    assert report["neg_elbo"] == pytest.approx((recon + kl).mean().item(), abs=1.0)
    assert abs(report["kl"] - first_layer_only) > 1.0
