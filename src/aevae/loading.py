"""A trained model and its data, for the commands that inspect a run (aevae-eval, aevae-sample)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aevae.config import UserError


@dataclass
class LoadedRun:
    model: Any  # an aevae.models.Autoencoder, in eval mode on `device`
    datamodule: Any  # its aevae.data.MNISTDataModule, set up, splits on `device`
    checkpoint: Path
    run_dir: Path  # where the checkpoint's run writes (the folder above checkpoints/)
    device: torch.device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise UserError(f"device={name} is not usable here: {str(err).splitlines()[0]}") from None
    return device


def load_run(cfg: DictConfig) -> LoadedRun:
    """The model of `cfg.ckpt` (or of `cfg.run_dir`'s best checkpoint) with the data it was
    trained on, the non-null keys of `cfg.data` set on top, both on `cfg.device`."""
    from aevae.models import load_checkpoint, resolve_checkpoint

    if (cfg.ckpt is None) == (cfg.run_dir is None):
        raise UserError("give one of ckpt=CHECKPOINT or run_dir=RUN_DIR")
    key, where = ("ckpt", cfg.ckpt) if cfg.ckpt is not None else ("run_dir", cfg.run_dir)
    checkpoint = resolve_checkpoint(where, key=key)
    device = pick_device(cfg.device)
    model = load_checkpoint(checkpoint, map_location=device, key=key)
    datamodule = datamodule_of(model, OmegaConf.to_container(cfg.data), device)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return LoadedRun(model, datamodule, checkpoint, run_dir, device)


def datamodule_of(model: Any, data: dict[str, Any], device: torch.device) -> Any:
    """The data module `model` was trained on (its run config's `data`), the non-null keys of
    `data` set on top, set up with its splits on `device`."""
    from hydra.utils import instantiate

    from aevae.validation import validate

    data_cfg = OmegaConf.create(model.run_config["data"])
    data_cfg.merge_with({k: v for k, v in data.items() if v is not None})
    validate(OmegaConf.create({"data": data_cfg}))
    datamodule = instantiate(data_cfg)
    datamodule.setup()
    datamodule.splits = {name: (x.to(device), y.to(device)) for name, (x, y) in datamodule.splits.items()}
    return datamodule


def split_images(run: LoadedRun, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images as floats in [0, 1] and its labels, on the run's device."""
    from aevae.data import to_float

    images, labels = run.datamodule.splits[split]
    return to_float(images), labels
