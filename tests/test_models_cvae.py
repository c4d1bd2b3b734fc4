"""model=cvae: the label reaches encoder and decoder, its bounds, training, checkpoints, sampling
one class, and every refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import aevae
from aevae.callbacks.media import PriorSamples
from aevae.commands.sample import _label
from aevae.commands.train import build
from aevae.config import UserError, compose_config, user_error
from aevae.evaluation.likelihood import likelihood_bounds
from aevae.losses import Bernoulli, log_prior_over_posterior
from aevae.models import CVAE, MLP, VAE, Conv, load_checkpoint
from conftest import EXE, QUIET, SMALL_DATA, command, mnist_root, png_size, run


def make(net: type = MLP, **kwargs) -> CVAE:
    torch.manual_seed(0)
    return CVAE(
        latent_dim=8,
        net=net,
        likelihood=Bernoulli(),
        optimizer=torch.optim.Adam,
        hidden_dims=[32],
        num_classes=10,
        **kwargs,
    )


def tiny_overrides(*extra: str) -> list[str]:
    return [
        "model=cvae",
        f"data.root={mnist_root()}",
        *SMALL_DATA,
        *QUIET,
        "logger=none",
        "model.hidden_dims=[32]",
        *extra,
    ]


@pytest.mark.parametrize("net", [MLP, Conv])
def test_encoder_and_decoder_see_the_label(net: type) -> None:
    model = make(net)
    x, z = torch.rand(4, 1, 28, 28), torch.randn(4, 8)
    one, other = torch.zeros(4, dtype=torch.long), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        assert not torch.allclose(model.decode(z, one), model.decode(z, other))
        assert not torch.allclose(model.encode(x, one), model.encode(x, other))
        # the first row's label is the same in both: its decoding is too
        torch.testing.assert_close(model.decode(z, one)[1:2], model.decode(z[1:2], other[:1] * 0))
    assert model.encoder(torch.rand(2, 2, 28, 28)).shape == (2, 16)  # image + label channel


def test_draws_path_and_iw_weights_use_each_images_label() -> None:
    """k draws decode every image with its own label (the draws are flattened draw-major)."""
    model = make()
    x, y = torch.rand(5, 1, 28, 28).round(), torch.tensor([0, 3, 3, 7, 9])
    with torch.no_grad():
        log_w = model.log_weights(x, 3, torch.Generator().manual_seed(1), y)
        mu, log_var = model.posterior(x, y)
        noise = torch.randn((3, *mu.shape), generator=torch.Generator().manual_seed(1))
        z = mu + noise * (0.5 * log_var).exp()
        recon = torch.stack([model.likelihood(model.decode(z[i], y), x) for i in range(3)])
    torch.testing.assert_close(log_w, log_prior_over_posterior(z, mu, log_var) - recon)


def test_one_draw_bound_is_the_elbo_and_the_iw_bound_is_tighter() -> None:
    model = make()
    x, y = torch.rand(64, 1, 28, 28).round(), torch.arange(64) % 10
    with torch.no_grad():
        torch.manual_seed(2)
        mu, log_var, _, recon = model.sample(x, 1, y=y)
        torch.manual_seed(2)
        terms = model.terms(x, y=y)  # the one-draw path skips `sample`: same noise, same numbers
        torch.testing.assert_close(terms["recon"], recon[0])
        one = -model.log_weights(x, 1, torch.Generator().manual_seed(3), y)[0]
        bounds = likelihood_bounds(model, x, 100, generator=torch.Generator().manual_seed(4), labels=y)
    # one draw's -log w is the ELBO's estimate: equal to the analytic-KL -ELBO in expectation
    assert one.mean().item() == pytest.approx(terms["neg_elbo"].mean().item(), rel=0.05)
    assert (bounds["iw_nll"] <= bounds["neg_elbo"] + 1e-4).all()
    assert bounds["iw_nll"].mean() < bounds["neg_elbo"].mean()


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_trains_evaluates_and_round_trips_its_checkpoint(tmp_path: Path, net: str) -> None:
    overrides = tiny_overrides(
        f"model/net={net}",
        "loss=bce",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )
    fitted = build(compose_config(overrides, output_dir=tmp_path))
    fitted.trainer.fit(fitted.model, datamodule=fitted.datamodule)
    (metrics,) = fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, verbose=False)
    assert fitted.trainer.global_step == 2 and all(math.isfinite(v) for v in metrics.values())
    assert {"test/neg_elbo", "test/kl", "test/recon", "test/bits_per_dim"} <= set(metrics)
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(loaded, CVAE) and loaded.num_classes == 10
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 5, 8])
    model = fitted.model.cpu().eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, y), model(x, y))


def test_unlabelled_data_are_refused(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)  # no labels: every image is -1
    overrides = ["model=cvae", "data=array", f"data.path={tmp_path / 'images.npy'}", *QUIET, "logger=none"]
    with pytest.raises(Exception) as raised:
        build(compose_config(overrides, output_dir=tmp_path / "run"))
    assert user_error(raised.value) == (
        "model=cvae is conditioned on class labels and the data have 0; use labelled data "
        "(an image folder's classes are its sub-folders)"
    )


def test_a_label_is_refused_by_an_unconditional_model_and_out_of_range() -> None:
    torch.manual_seed(0)
    vae = VAE(latent_dim=4, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[8])
    with pytest.raises(
        UserError, match=r"^sample.label=3 is for a conditional model \(model=cvae\); this VAE"
    ):
        _label(3, vae)
    assert _label(None, vae) is None and _label(9, make()) == 9
    for bad in (10, -1, "3", 2.5, True):
        with pytest.raises(UserError, match=f"^sample.label={bad} is not a class of this CVAE: give 0 to 9"):
            _label(bad, make())


def test_the_api_needs_labels_for_a_conditional_model_and_refuses_them_elsewhere() -> None:
    model, x = make().eval(), torch.rand(4, 1, 28, 28)
    with pytest.raises(UserError, match=r"^this CVAE encodes and decodes given class labels: pass labels="):
        aevae.encode(model, x)
    with pytest.raises(UserError, match=r"^this CVAE encodes and decodes given class labels"):
        aevae.interpolate(model, x[0], x[1])
    with pytest.raises(UserError, match=r"^labels= must be class ids 0 to 9"):
        aevae.reconstruct(model, x, labels=torch.tensor([0, 1, 2, 10]))
    with pytest.raises(UserError, match=r"^labels= must be 4 class ids \(one per image\) or one int"):
        aevae.decode(model, torch.randn(4, 8), labels=torch.tensor([0, 1]))
    vae = VAE(latent_dim=4, net=MLP, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[8])
    with pytest.raises(UserError, match=r"^labels= are for a conditional model \(model=cvae\); this VAE"):
        aevae.encode(vae.eval(), x, labels=0)
    codes = aevae.encode(model, x, labels=torch.tensor([0, 1, 2, 3]))
    assert codes.shape == (4, 8)
    assert torch.equal(aevae.decode(model, codes, labels=3), aevae.decode(model, codes, labels=[3] * 4))
    assert aevae.interpolate(model, x[0], x[1], steps=5, labels=(2, 7)).shape == (5, 1, 28, 28)
    assert aevae.sample(model, 20).shape == (20, 1, 28, 28)  # every class in turn by default
    assert not torch.allclose(aevae.sample(model, 4, labels=1), aevae.sample(model, 4, labels=2))


def test_prior_samples_grid_has_a_column_per_class() -> None:
    model = make().eval()
    grid = PriorSamples(num_samples=15).render(None, model)  # a prior: nothing read from a trainer
    assert grid.shape[1:] == (2 * 30 + 2, 10 * 30 + 2)  # 15 samples: 2 rows of the 10 classes
    columns = grid[:, 2:-2, 2:-2].unfold(2, 30, 30)  # [C, H, 10, 30]: column c is class c
    assert not torch.equal(columns[..., 0, :], columns[..., 1, :])


# -- one short real run: per-class samples, aevae-sample sample.label, aevae-eval -------------
@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten epochs of 20 batches on 1,280 real MNIST images, through the real entry point."""
    run_dir = tmp_path_factory.mktemp("cvae")
    settings = ("model.hidden_dims=[128]", "model.lr=3e-3", "trainer.max_epochs=10")
    proc = run(EXE, *tiny_overrides(*settings), f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_per_class_samples_look_like_their_class(cvae_run: Path) -> None:
    """Without a judge: a sample drawn for class c is nearest to the mean training image of class
    c far more often than chance (0.1; real test images: 0.8) after 200 steps."""
    model = aevae.load(cvae_run)
    images, labels = aevae.images(model, "train")
    class_means = torch.stack([images[labels == c].mean(0) for c in range(10)]).flatten(1)
    samples = aevae.sample(model, 1000, seed=1).flatten(1)  # labels cycle 0..9
    nearest = torch.cdist(samples, class_means).argmin(1)
    assert (nearest == torch.arange(1000) % 10).float().mean() > 0.3


def test_sample_label_draws_one_class(cvae_run: Path, tmp_path: Path) -> None:
    small = ("sample.reconstructions=8", "sample.scatter_points=100")
    three = run(*command("sample"), f"run_dir={cvae_run}", "sample.label=3", *small, f"out={tmp_path}")
    assert three.returncode == 0, three.stderr[-3000:]
    assert png_size(tmp_path / "prior_samples.png") == (8 * 30 + 2,) * 2  # 64 in rows of 8
    assert png_size(tmp_path / "interpolations.png") == (12 * 30 + 2, 4 * 30 + 2)
    bad = run(*command("sample"), f"run_dir={cvae_run}", "sample.label=10", f"out={tmp_path / 'bad'}")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == (
        "aevae-sample: error: sample.label=10 is not a class of this CVAE: give 0 to 9, "
        "or null for every class"
    )


def test_eval_reports_the_conditional_accuracy(cvae_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = run(
        *command("eval"),
        f"run_dir={cvae_run}",
        f"out={out}",
        "eval.iw_samples=8",
        "eval.iw_images=100",
        "eval.num_samples=500",
        "eval.interpolation_pairs=10",
        "eval.judge_epochs=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())["metrics"]
    assert 0.15 < metrics["samples/conditional_accuracy"] <= 1  # chance: 0.1 (0.26 after 200 steps)
    assert metrics["likelihood/iw_nll"] <= metrics["likelihood/neg_elbo"]
    assert "repr/linear_probe" not in metrics  # its codes were computed from the labels
    assert png_size(tmp_path / "samples.png") == (10 * 30 + 2, 6 * 30 + 2)  # 60 of them, a column per class


def test_export_refuses_a_conditional_model(cvae_run: Path) -> None:
    proc = run(*command("export"), f"run_dir={cvae_run}", "format=torchscript")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"aevae-export: error: run_dir={cvae_run} holds a conditional CVAE, whose encoder and decoder "
        "also take a label: export takes unconditional models; use aevae.load() in Python for this one"
    )
