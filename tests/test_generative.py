"""Density modelling: binarization, IWAE bound, k samples, warm-up, free bits, conv nets, Gaussian."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal

from aevae.commands.train import build
from aevae.config import compose_config
from aevae.data import MNISTDataModule
from aevae.data.batches import binarize
from aevae.losses import Bernoulli, Gaussian, kl_std_normal, log_mean_exp
from aevae.models import IWAE, MLP, VAE, Conv
from aevae.schedules import iwae_paper, iwae_paper_stage
from conftest import QUIET, SMALL_DATA, mnist_root


def make(cls: type[VAE], **kwargs) -> VAE:
    torch.manual_seed(0)
    return cls(
        latent_dim=8, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[64], **kwargs
    )


def test_log_mean_exp_is_stable_far_below_zero() -> None:
    values = torch.tensor([[-1000.0, -1001.0], [-1000.0, -1002.0]])
    expected = torch.tensor([-1000.0, -1001.0 + math.log((1 + math.exp(-1.0)) / 2)])
    torch.testing.assert_close(log_mean_exp(values, 0), expected)
    assert torch.isfinite(log_mean_exp(torch.full((5000, 3), -1e4), 0)).all()


def test_iwae_bound_with_one_sample_is_the_elbo() -> None:
    x = torch.rand(16, 1, 28, 28).round()
    vae, iwae = make(VAE), make(IWAE, k=1)
    iwae.load_state_dict(vae.state_dict())
    torch.manual_seed(1)
    log_w = vae.log_weights(x, 1)[0]  # one draw: log p(x, z) - log q(z | x), the ELBO's estimate
    torch.manual_seed(1)
    torch.testing.assert_close(-iwae.terms(x)["loss"], log_w)
    torch.manual_seed(1)  # the same draw through the VAE's analytic KL: equal in expectation, not per draw
    assert iwae.terms(x)["neg_elbo"].mean().item() == pytest.approx(
        vae.terms(x)["neg_elbo"].mean().item(), rel=0.05
    )


def test_bound_tightens_with_k_on_average() -> None:
    vae = make(VAE)
    x = torch.rand(64, 1, 28, 28).round()
    torch.manual_seed(2)
    with torch.no_grad():
        bounds = {k: log_mean_exp(vae.log_weights(x, k)).mean().item() for k in (1, 10, 100)}
    assert bounds[1] < bounds[10] < bounds[100]


def test_vae_with_k_samples_averages_the_reconstruction() -> None:
    vae = make(VAE, k=5)
    x = torch.rand(4, 1, 28, 28).round()
    torch.manual_seed(3)
    mu, log_var, _, recon = vae.sample(x, 5)
    torch.manual_seed(3)
    terms = vae.terms(x)
    torch.testing.assert_close(terms["recon"], recon.mean(0))
    assert recon.shape == (5, 4) and recon.std(0).min() > 0  # five different draws


def test_one_draw_terms_equal_the_draws_path_on_the_same_noise() -> None:
    """VAE.terms skips `sample`'s draws dim for k = 1; same noise, same numbers, also with a target."""
    vae = make(VAE)
    x, target = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28).round()
    torch.manual_seed(5)
    mu, log_var, _, recon = vae.sample(x, 1, target)
    torch.manual_seed(5)
    terms = vae.terms(x, target)
    torch.testing.assert_close(terms["recon"], recon[0])
    torch.testing.assert_close(terms["kl"], kl_std_normal(mu, log_var))
    torch.testing.assert_close(terms["loss"], recon[0] + kl_std_normal(mu, log_var))


def test_free_bits_floor_each_dim_in_the_loss_only() -> None:
    vae = make(VAE, free_bits=5.0)
    x = torch.rand(8, 1, 28, 28).round()
    torch.manual_seed(4)
    terms = vae.terms(x)
    assert (terms["loss"] >= terms["recon"] + 8 * 5.0 - 1e-4).all()  # 8 dims, each >= 5 nats
    assert (terms["kl"] < 8 * 5.0).all()  # the logged KL is the real one (small at init)


def test_gaussian_decoder_nll_fixed_and_learned() -> None:
    logits, x = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    for loss, sigma in ((Gaussian(0.2), torch.tensor(0.2)), (Gaussian(0.3, learn_sigma=True), None)):
        sigma = sigma if sigma is not None else loss.log_sigma.exp()
        expected = -Normal(torch.sigmoid(logits), sigma).log_prob(x).flatten(1).sum(1)
        torch.testing.assert_close(loss(logits, x), expected)
    learned = Gaussian(0.3, learn_sigma=True)
    assert learned.log_sigma.requires_grad and learned.log_sigma.shape == (1, 28, 28)
    assert not any(p.requires_grad for p in Gaussian(0.3).parameters())


def test_conv_nets_are_a_drop_in() -> None:
    nets = Conv(image_shape=(1, 28, 28), hidden_dims=[64])
    encoder, decoder = nets.encoder(16), nets.decoder(8)
    assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, 16)
    assert decoder(torch.randn(2, 8)).shape == (2, 1, 28, 28)


def test_dynamic_binarization_redraws_with_the_right_mean() -> None:
    x = torch.full((200, 1, 28, 28), 0.3)
    first, again, other = binarize(x, (0, 0, 0)), binarize(x, (0, 0, 0)), binarize(x, (0, 1, 0))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first, again) and not torch.equal(
        first, other
    )  # a function of (seed, epoch, position)
    assert first.mean().item() == pytest.approx(0.3, abs=0.01)


def test_binarized_splits(mnist: Path) -> None:
    def splits(mode: str, seed: int = 0) -> MNISTDataModule:
        dm = MNISTDataModule(
            root=str(mnist), download=False, binarize=mode, binarize_seed=seed, train_size=5000
        )
        dm.setup()
        return dm

    static, static_again, dynamic = splits("static"), splits("static"), splits("dynamic")
    assert set(static.splits["train"][0].unique().tolist()) == {0, 255}
    assert torch.equal(static.splits["train"][0], static_again.splits["train"][0])  # fixed for a seed
    assert not torch.equal(static.splits["train"][0], splits("static", seed=1).splits["train"][0])
    assert set(dynamic.splits["train"][0].unique().tolist()) > {0, 255}  # grey levels kept, drawn per batch
    assert set(dynamic.splits["test"][0].unique().tolist()) == {0, 255}  # evaluated on one fixed draw
    batches = dynamic.train_dataloader()
    first = next(iter(batches))[0]
    batches.sampler.set_epoch(1)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    grey = MNISTDataModule(root=str(mnist), download=False)
    grey.setup()
    assert abs(first.mean().item() - grey.splits["train"][0].float().div(255).mean().item()) < 0.02


def test_iwae_paper_schedule() -> None:
    assert [iwae_paper_stage(e) for e in (0, 1, 3, 4, 12, 13, 39, 40, 1092, 1093, 3279)] == [
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        6,
        7,
        7,
    ]
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule, lrs = iwae_paper(optimizer), {}
    for epoch in range(41):
        lrs[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert lrs[4] == pytest.approx(1e-3 * 10 ** (-2 / 7)) and lrs[40] == pytest.approx(1e-3 * 10 ** (-4 / 7))


def test_kl_warmup_ramps_beta_per_step(tmp_path: Path) -> None:
    overrides = [
        "model=vae",
        f"data.root={mnist_root()}",
        *SMALL_DATA,
        *QUIET,
        "logger=csv",
        "trainer.max_epochs=3",
        "model.kl_warmup_epochs=2",
        "test=false",
    ]
    run = build(compose_config(overrides, output_dir=tmp_path))
    weights = []
    original = run.model.on_train_batch_start

    def record(batch, batch_idx):  # noqa: ANN001
        original(batch, batch_idx)
        weights.append(run.model.kl_weight)

    run.model.on_train_batch_start = record
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert weights[0] == 0 and weights == sorted(weights) and weights[-1] == 1.0
    logged = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/kl_weight" in logged
