"""Rebuild a trained model from an aevae checkpoint alone, or from the run dir that holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aevae.config import UserError
from aevae.engine.checkpointing import LAST, peek
from aevae.models.base import Autoencoder


def resolve_checkpoint(path: str | Path, key: str = "ckpt") -> Path:
    """`path` itself, or for a run dir its best checkpoint (by val/loss), else its last one."""
    path = Path(path)
    if not path.exists() and key == "run_dir":
        raise UserError(f"run_dir={path} does not exist; give the folder of an aevae-train run")
    if not path.is_dir():
        return path
    folder = path / "checkpoints"
    if (best := _recorded_best(folder / LAST)) is not None:
        return best
    epochs = sorted(folder.glob("epoch*.ckpt"))
    if len(epochs) == 1:
        return epochs[0]
    if (folder / LAST).is_file():
        return folder / LAST
    raise UserError(f"{key}={path} is a folder without checkpoints/*.ckpt; give an aevae-train run dir")


def _recorded_best(last: Path) -> Path | None:
    """The best checkpoint that ModelCheckpoint recorded in `last`, if it is still next to it."""
    if not last.is_file():
        return None
    for name, state in (peek(last).get("callbacks") or {}).items():
        recorded = state.get("best_model_path") if name.startswith("ModelCheckpoint") else None
        if recorded and (candidate := last.parent / Path(recorded).name).is_file():
            return candidate
    return None


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    key: str = "checkpoint",
    expect: type[torch.nn.Module] = Autoencoder,
    overrides: dict[str, Any] | None = None,
    strict: bool = True,
) -> Any:
    """The model saved in `path`, in eval mode; a UserError unless it is an `expect`.

    Checkpoints hold the run's config as plain containers, so they load with
    `torch.load(weights_only=True)`: nothing in them is executed. `overrides` replace
    arguments of the model's constructor (keys of its `model` config, e.g. `beta`).
    """
    from hydra.utils import get_class, instantiate

    checkpoint = peek(path, key=key)
    config = checkpoint.get("aevae_config") if isinstance(checkpoint, dict) else None
    if not config or "state_dict" not in checkpoint:
        raise UserError(
            f"{key}={path} is not an aevae checkpoint (it has no aevae_config); train it with aevae-train"
        )
    target = config["model"]["_target_"]
    if not issubclass(get_class(target), expect):
        held = target.rsplit(".", 1)[-1]
        raise UserError(f"{key}={path} holds a model of class {held}, not of class {expect.__name__}")
    model = instantiate({**config["model"], **(overrides or {})}, _convert_="all")
    model.load_state_dict(checkpoint["state_dict"], strict=strict)
    model.run_config = config
    model.eval_seed = config.get("seed") or 0
    return model.to(map_location).eval()
