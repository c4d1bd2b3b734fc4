"""VQ-VAE: the EMA codebook, dead-code restarts, the straight-through gradient, perplexity; its
learned prior (a gated PixelCNN over the frozen code grid)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from aevae.commands.train import build
from aevae.config import CONFIG_DIR, UserError, compose_config
from aevae.losses import Bernoulli
from aevae.metrics import CodebookPerplexity
from aevae.models import VQVAE, Conv, VQPrior, load_checkpoint, resolve_checkpoint
from aevae.models.vq_prior import GatedPixelCNN
from conftest import QUIET, SMALL_DATA, aevae_train, mnist_root

SHORT = (
    f"data.root={mnist_root()}",
    *SMALL_DATA,
    *QUIET,
    "logger=none",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)


def tiny(**kwargs) -> VQVAE:
    torch.manual_seed(0)
    options = {"codebook_size": 3, "decay": 0.9, "restart_threshold": 0.0, **kwargs}
    return VQVAE(2, net=Conv, likelihood=Bernoulli(), optimizer=torch.optim.Adam, hidden_dims=[], **options)


def test_ema_codebook_update_equals_the_hand_computation() -> None:
    model = tiny(epsilon=0.5)
    codebook = model.codebook.clone()
    z_e = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-1.0, 4.0]])
    indices = torch.tensor([0, 0, 2])
    model.update_codebook(z_e, indices)
    # counts 1 each before; n = [2, 0, 1]: N = 0.9 * 1 + 0.1 * n
    count = torch.tensor([1.1, 0.9, 1.0])
    assert torch.allclose(model.ema_count, count)
    sums = 0.9 * codebook + 0.1 * torch.tensor([[4.0, 2.0], [0.0, 0.0], [-1.0, 4.0]])
    assert torch.allclose(model.ema_sum, sums)
    total = 3.0  # Laplace smoothing: (N_k + eps) / (n + K eps) * n
    smoothed = (count + 0.5) / (total + 3 * 0.5) * total
    assert torch.allclose(model.codebook, sums / smoothed[:, None])


def test_dead_codes_restart_at_encoder_outputs_of_the_batch() -> None:
    model = tiny(codebook_size=4, restart_threshold=0.95)
    z_e = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-1.0, 4.0]])
    before = model.codebook.clone()
    model.update_codebook(z_e, torch.tensor([0, 0, 2]))  # codes 1 and 3: count 0.9 < 0.95
    for dead in (1, 3):
        assert (model.codebook[dead] == z_e).all(1).any() and model.ema_count[dead] == 1
        assert not torch.equal(model.codebook[dead], before[dead])
    assert torch.allclose(model.ema_count[[0, 2]], torch.tensor([1.1, 1.0]))  # the live ones: EMA only


def test_training_step_updates_the_codebook_after_the_optimizer_step() -> None:
    model = tiny(codebook_size=8).train()
    before = model.codebook.clone()
    model.terms(torch.rand(2, 1, 28, 28))["loss"].mean().backward()
    model.after_step()
    assert not torch.equal(model.codebook, before) and model._stash is None
    model.eval().terms(torch.rand(2, 1, 28, 28))
    assert model._stash is None  # evaluation leaves the codebook alone


def test_straight_through_gradient_reaches_the_encoder() -> None:
    model = tiny()
    recon = model.terms(torch.rand(2, 1, 28, 28))["recon"]  # the decoder's term alone
    grads = torch.autograd.grad(recon.sum(), list(model.encoder.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_perplexity_equals_the_hand_computation() -> None:
    metric = CodebookPerplexity(4)
    metric.update(torch.tensor([[0, 0], [1, 2]]))
    metric.update(torch.tensor([0, 0, 1, 2]))  # usage [4, 2, 2, 0] of 8
    p = torch.tensor([0.5, 0.25, 0.25])
    assert metric.compute().item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))  # 2 ** 1.5


def test_codes_are_the_flat_quantized_grid_and_prior_codes_decode() -> None:
    model = tiny(codebook_size=5).eval()
    x = torch.rand(3, 1, 28, 28)
    code = model.encode(x)
    assert code.shape == (3, 2 * 7 * 7)
    vectors = code.view(3, 2, 49).transpose(1, 2).reshape(-1, 2)
    assert ((vectors[:, None] == model.codebook).all(-1)).any(1).all()  # every one a codebook vector
    assert torch.equal(model.codes_of(model.indices(x)), code)
    codes = model.prior_codes(4, generator=torch.Generator().manual_seed(1))
    assert model.decode(codes).shape == (4, 1, 28, 28)


def test_mlp_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = compose_config(["model=vqvae", "model/net=mlp"], output_dir=tmp_path)
    with pytest.raises(Exception) as err:
        instantiate(cfg.model, _convert_="all")
    message = str(err.value.__cause__ or err.value)
    assert isinstance(err.value.__cause__ or err.value, UserError) and "\n" not in message
    assert "model/net=conv" in message


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A VQ-VAE trained two steps (conv net, loss=bce) with every TensorBoard callback (prior samples,
    interpolations, projector, histograms), tested: its run dir and codebook."""
    run_dir = tmp_path_factory.mktemp("vqvae")
    overrides = ["model=vqvae", "latent_dim=4", "model.codebook_size=16", *SHORT, "logger=tensorboard"]
    fitted = build(compose_config(overrides, run_dir))
    fitted.trainer.fit(fitted.model, datamodule=fitted.datamodule)
    (metrics,) = fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, verbose=False)
    assert fitted.trainer.global_step == 2 and all(math.isfinite(v) for v in metrics.values())
    assert 1 <= metrics["test/perplexity"] <= 16
    assert {"test/commitment", "test/recon", "test/mse"} <= set(metrics)
    assert (run_dir / "tensorboard" / "projector_config.pbtxt").is_file()  # the callbacks took its codes
    return run_dir, fitted.model.codebook.cpu().clone()


@pytest.mark.parametrize("net,loss", [("conv", "gaussian"), ("resnet", "bce")])
def test_vqvae_trains_and_tests(tmp_path: Path, net: str, loss: str) -> None:
    overrides = ["model=vqvae", f"model/net={net}", f"loss={loss}", "model.codebook_size=16", *SHORT]
    fitted = build(compose_config(overrides, output_dir=tmp_path))
    fitted.trainer.fit(fitted.model, datamodule=fitted.datamodule)
    (metrics,) = fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, verbose=False)
    assert all(math.isfinite(v) for v in metrics.values()) and 1 <= metrics["test/perplexity"] <= 16


def test_checkpoint_round_trip(vq_run: tuple[Path, torch.Tensor]) -> None:
    run_dir, codebook = vq_run
    model = load_checkpoint(resolve_checkpoint(run_dir))
    again = load_checkpoint(resolve_checkpoint(run_dir))
    x = torch.rand(2, 1, 28, 28)
    assert isinstance(model, VQVAE) and torch.equal(model.codebook, codebook)  # the trained one
    with torch.no_grad():
        assert torch.equal(model(x), again(x)) and torch.equal(model.encode(x), again.encode(x))


def test_pixelcnn_is_causal_in_raster_order() -> None:
    torch.manual_seed(0)
    net = GatedPixelCNN(num_codes=6, channels=8, layers=3, kernel_size=3).eval()
    indices = torch.randint(6, (1, 5, 5))
    changed = indices.clone()
    changed[0, 2, 2] = (indices[0, 2, 2] + 1) % 6
    moved = (net(indices) - net(changed)).abs().amax(1)[0].flatten() > 0  # [25] raster order
    assert not moved[: 2 * 5 + 3].any()  # position (2, 2) and all before it
    assert moved[2 * 5 + 3 :].any()  # the ones after it depend on it
    assert torch.allclose(net(indices[:, :3]), net(indices)[:, :, :3], atol=1e-6)  # sampling crops rows


def test_prior_trains_on_frozen_codes_and_its_samples_decode(
    vq_run: tuple[Path, torch.Tensor], tmp_path: Path
) -> None:
    prior_dir = tmp_path / "prior"
    aevae_train("experiment=vqvae_prior", f"pretrained={vq_run[0]}", *SHORT, f"hydra.run.dir={prior_dir}")
    assert math.isfinite(json.loads((prior_dir / "metrics.json").read_text())["test/loss"])
    prior = load_checkpoint(resolve_checkpoint(prior_dir))
    vqvae = load_checkpoint(resolve_checkpoint(vq_run[0]))
    assert isinstance(prior, VQPrior) and torch.equal(prior.vqvae.codebook, vqvae.codebook)  # frozen
    codes = prior.prior_codes(3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (3, 4 * 7 * 7) and prior.decode(codes).shape == (3, 1, 28, 28)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(prior.encode(x), vqvae.encode(x))
    nll = prior.terms(x)["loss"]
    assert nll.shape == (2,) and (nll > 0).all()


def test_prior_without_pretrained_is_refused(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=vqvae_prior"], output_dir=tmp_path)
    with pytest.raises(Exception) as err:
        instantiate(cfg.model, _convert_="all")
    assert "needs pretrained=RUN_DIR" in str(err.value.__cause__ or err.value)


def test_export_refuses_a_vqvae_in_one_line(vq_run: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    from aevae.commands.export import export

    cfg = OmegaConf.load(CONFIG_DIR / "export.yaml")
    cfg.run_dir, cfg.out, cfg.format = str(vq_run[0]), str(tmp_path), "torchscript"
    with pytest.raises(UserError, match="aevae-export takes AE and VAE models"):
        export(cfg)


def test_ddp_ranks_update_one_codebook_as_one_process_would(tmp_path: Path) -> None:
    """Two CPU ranks with batch B sum their codebook statistics: the same EMA codebook as one
    process with batch 2B (restarts off: their candidates are rank 0's half of the batch)."""
    common = ("model=vqvae", "latent_dim=4", "model.codebook_size=16", "model.restart_threshold=0", *SHORT)
    for name, args in {
        "ddp": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=32"],
        "single": ["trainer=cpu", "data.batch_size=64"],
    }.items():
        aevae_train(
            *common, *args, "test=false", "trainer.deterministic=true", f"hydra.run.dir={tmp_path / name}"
        )
    ddp, single = (
        load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("ddp", "single")
    )
    torch.testing.assert_close(ddp.ema_count, single.ema_count)
    torch.testing.assert_close(ddp.codebook, single.codebook, rtol=1e-4, atol=1e-5)
