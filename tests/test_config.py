"""Every option of every config group composes and builds; Hydra reports mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from aevae.callbacks import trackers
from aevae.config import CONFIG_DIR, UserError, compose_config
from conftest import aevae_train

GROUPS = ("data", "model", "loss", "trainer", "callbacks", "logger", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    assert {"ae", "vae"} <= set(options("model"))
    assert {"mse", "bce", "gaussian"} <= set(options("loss"))
    assert {"cpu", "gpu", "ddp", "debug"} <= set(options("trainer"))
    assert {"mnist", "fashion_mnist", "kmnist"} <= set(options("data"))
    assert {"tensorboard", "csv", "mlflow", "wandb", "none"} <= set(options("logger"))
    assert all(options(g) for g in GROUPS)


def needed_overrides(group: str, option: str, tmp_path: Path) -> list[str]:
    """What an option cannot do without: the data of data=array and data=image_folder."""
    if (group, option) == ("data", "array"):
        np.save(tmp_path / "images.npy", np.zeros((20, 8, 8), dtype=np.uint8))
        return [f"data.path={tmp_path / 'images.npy'}"]
    if (group, option) == ("data", "image_folder"):
        (tmp_path / "images").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
        return [f"data.path={tmp_path / 'images'}"]
    return []


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_builds(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_config(
        [f"{group}={option}", *needed_overrides(group, option, tmp_path)], output_dir=tmp_path
    )
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    instantiate(cfg.data)
    needs_a_run = cfg.model._target_.endswith("VQPrior")  # of a trained VQ-VAE: test_models_vqvae.py
    if not needs_a_run and not (
        cfg.model._target_.endswith(("VAE", "IWAE")) and cfg.loss._target_.endswith("MSE")
    ):
        assert isinstance(instantiate(cfg.model, _convert_="all"), torch.nn.Module)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    for key, logger_cfg in (cfg.logger or {}).items():
        trackers.prepare(key, logger_cfg)  # as aevae.commands.train.build does: MLflow's file store allowed
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        return  # composes; building it needs a GPU
    overrides = {"accelerator": "cpu"} if cfg.trainer.get("strategy") == "ddp" else {}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)
    assert trainer.max_epochs == cfg.trainer.max_epochs


#: The models a `loss` applies to (the classifier trains on labels; the VQ prior on a VQ-VAE's codes).
AUTOENCODERS = [m for m in options("model") if m not in ("classifier", "vq_prior")]


@pytest.mark.parametrize("model", AUTOENCODERS)
@pytest.mark.parametrize("loss", options("loss"))
def test_model_and_loss_pairs(model: str, loss: str, tmp_path: Path) -> None:
    cfg = compose_config([f"model={model}", f"loss={loss}"], output_dir=tmp_path)
    if model in ("vae", "iwae", "cvae", "btcvae", "vamp", "hvae") and loss == "mse":
        with pytest.raises(Exception) as err:
            instantiate(cfg.model, _convert_="all")
        assert isinstance(err.value.__cause__ or err.value, UserError)
        return
    net = instantiate(cfg.model, _convert_="all")
    terms = net.batch_terms((torch.rand(4, 1, 28, 28), torch.arange(4)))  # labels: for the cvae
    assert torch.isfinite(terms["loss"]).all()


def test_classifier_trains_on_labels(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=finetune_classifier"], output_dir=tmp_path)
    assert cfg.data.label_fraction == 0.01 and cfg.pretrained is None
    net = instantiate(cfg.model, _convert_="all")
    terms = net.batch_terms((torch.rand(6, 1, 28, 28), torch.arange(6)))
    assert set(terms) == set(net.term_names) == {"loss", "error"}
    assert (terms["loss"] > 0).all() and set(terms["error"].tolist()) <= {0.0, 1.0}
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    cfg = compose_config([], output_dir=tmp_path)
    assert cfg.model._target_ == "aevae.models.AE" and cfg.loss._target_ == "aevae.losses.Bernoulli"
    assert cfg.data.batch_size == 64 and list(cfg.model.hidden_dims) == [128] and cfg.model.lr == 1e-3
    assert cfg.model.latent_activation == "none" and cfg.latent_dim == 32
    assert "progress_bar" in cfg.callbacks and cfg.trainer.get("enable_progress_bar", True)
    vae = compose_config(["model=vae"], output_dir=tmp_path)
    assert vae.model.beta == 1.0


def test_latent_dim_is_one_top_level_key(tmp_path: Path) -> None:
    cfg = compose_config(["latent_dim=5", "model=vae"], output_dir=tmp_path)
    model = instantiate(cfg.model, _convert_="all")
    assert model.latent_dim == 5 and model.encode(torch.rand(2, 1, 28, 28)).shape == (2, 5)


def test_data_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AEVAE_DATA", "/some/where")
    assert compose_config([], output_dir=tmp_path).data.root == "/some/where"
    monkeypatch.delenv("AEVAE_DATA")
    assert compose_config([], output_dir=tmp_path).data.root == "./data"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model=transformer", "Could not find 'model/transformer'"),
        ("model.latent_dimension=3", "latent_dimension"),
    ],
)
def test_hydra_reports_bad_choices_and_keys(override: str, expected: str, tmp_path: Path) -> None:
    proc = aevae_train(override, f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
