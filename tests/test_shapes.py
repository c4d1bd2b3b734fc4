"""Every model x net x image shape: a training step, evaluation, samples and a checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from aevae.config import compose_config
from aevae.models import load_checkpoint
from aevae.sampling.pictures import decoded_images
from aevae.sampling.samplers import make_sampler

SHAPES = {"1x28x28": (1, 28, 28), "3x32x32": (3, 32, 32), "3x64x64": (3, 64, 64)}
MODELS = ("ae", "vae", "iwae")
NETS = ("mlp", "conv", "resnet")


def cases() -> list:
    """All models and nets at 3x32x32; each net with the VAE at the other shapes."""
    return [(m, n, "3x32x32") for m in MODELS for n in NETS] + [
        ("vae", n, s) for n in NETS for s in SHAPES if s != "3x32x32"
    ]


@pytest.mark.parametrize("model,net,shape", cases())
def test_model_net_and_shape(model: str, net: str, shape: str, tmp_path: Path, monkeypatch) -> None:
    import lightning as L

    monkeypatch.setenv("AEVAE_CACHE", str(tmp_path / "cache"))
    c, h, w = SHAPES[shape]
    images = np.random.default_rng(0).integers(0, 256, (24, c, h, w), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", images=images, labels=np.arange(24) % 3)
    loss = "logistic" if c == 3 and model == "vae" else "bce"
    overrides = [
        "data=array",
        f"data.path={tmp_path / 'images.npz'}",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        f"model={model}",
        f"model/net={net}",
        f"loss={loss}",
        "latent_dim=4",
        "model.hidden_dims=[16]",
    ]
    if net != "mlp":  # narrow: the widths the nets choose themselves are tested in test_nets.py
        blocks = {28: 2, 32: 3, 64: 4}[h]
        overrides.append(f"model.net.channels=[{','.join(['8'] * blocks)}]")
    if net == "resnet":
        overrides += ["model.net.blocks=1", "model.net.residual_channels=8"]
    if model == "iwae":
        overrides.append("model.k=3")
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert list(cfg.model.image_shape) == [c, h, w]
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model, _convert_="all")
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # what load_checkpoint rebuilds from
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    assert all(np.isfinite(v) for v in metrics.values()) and metrics["test/mse"] < 1
    if model != "ae":
        assert metrics["test/bits_per_dim"] > 0
    with torch.no_grad():
        module.eval()
        codes = make_sampler({"name": "auto"}, module).fit(torch.randn(20, 4)).sample(5)
        samples = decoded_images(module, codes)
    assert samples.shape == (5, c, h, w) and samples.min() >= 0 and samples.max() <= 1
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_checkpoint(path)
    x = torch.rand(2, c, h, w)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), module.eval()(x))
