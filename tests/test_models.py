"""AE and VAE: shapes, the shared base, and the knobs the config exposes."""

from __future__ import annotations

import pytest
import torch

from aevae.config import UserError
from aevae.losses import MSE, Bernoulli
from aevae.models import AE, MLP, VAE, Autoencoder


def make(cls: type[Autoencoder], **kwargs) -> Autoencoder:
    kwargs.setdefault("likelihood", Bernoulli())
    return cls(latent_dim=32, net=MLP, optimizer=torch.optim.Adam, **kwargs)


@pytest.mark.parametrize("cls", [AE, VAE])
def test_shapes(cls: type[Autoencoder]) -> None:
    model = make(cls)
    x = torch.rand(7, 1, 28, 28)
    assert model.encode(x).shape == (7, 32)
    assert model.decode(torch.randn(7, 32)).shape == (7, 1, 28, 28)
    recon = model(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    terms = model.terms(x)
    assert tuple(terms) == cls.term_names and terms["loss"] is not None
    assert all(v.shape == (7,) for v in terms.values())


def test_default_net_is_the_classic_784_128_32() -> None:
    ae = make(AE)
    linears = [m for m in [*ae.encoder, *ae.decoder] if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 128),
        (128, 32),
        (32, 128),
        (128, 784),
    ]
    assert isinstance(ae.latent_activation, torch.nn.Identity)  # no ReLU on the code by default


def test_vae_is_the_ae_plus_a_posterior_head() -> None:
    ae, vae = make(AE), make(VAE)
    extra = sum(p.numel() for p in vae.parameters()) - sum(p.numel() for p in ae.parameters())
    assert extra == 128 * 32 + 32  # one more mean-or-log-variance output per latent dim
    mu, log_var = vae.posterior(torch.rand(3, 1, 28, 28))
    assert torch.equal(vae.encode(torch.zeros(1, 1, 28, 28)), vae.posterior(torch.zeros(1, 1, 28, 28))[0])
    assert mu.shape == log_var.shape == (3, 32)


def test_latent_activation_is_configurable() -> None:
    ae = make(AE, latent_activation="relu")
    assert (ae.encode(torch.rand(50, 1, 28, 28)) >= 0).all()
    with pytest.raises(UserError, match="swish"):
        make(AE, latent_activation="swish")


def test_hidden_dims_shape_the_mlp() -> None:
    ae = make(AE, hidden_dims=[256, 64])
    sizes = [m.out_features for m in ae.encoder if isinstance(m, torch.nn.Linear)]
    assert sizes == [256, 64, 32]


def test_vae_refuses_a_loss_without_likelihood() -> None:
    with pytest.raises(UserError, match="loss=bce.*loss=gaussian"):
        make(VAE, likelihood=MSE())


def test_optimizer_gets_lr_and_hparams_are_plain() -> None:
    vae = make(VAE, lr=3e-4, beta=2.0)
    opt = vae.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 3e-4
    assert vae.hparams["beta"] == 2.0 and vae.hparams["latent_dim"] == 32 and vae.hparams["lr"] == 3e-4
    assert "net" not in vae.hparams and "likelihood" not in vae.hparams


def test_active_units_counts_varying_dims() -> None:
    from aevae.models.base import ActiveUnits

    metric = ActiveUnits(latent_dim=4)
    codes = torch.randn(1000, 4) * torch.tensor([1.0, 0.5, 0.05, 0.0])  # variances 1, .25, .0025, 0
    for chunk in codes.split(300):
        metric.update(chunk)
    assert metric.compute().item() == 2


def test_one_training_step_lowers_the_loss() -> None:
    torch.manual_seed(0)
    for cls in (AE, VAE):
        model = make(cls)
        opt = model.configure_optimizers()
        x = torch.rand(32, 1, 28, 28).round()
        before = model.terms(x)["neg_elbo" if cls is VAE else "loss"].mean().item()
        for _ in range(20):
            loss = model.terms(x)["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = model.terms(x)["neg_elbo" if cls is VAE else "loss"].mean().item()
        assert after < before
