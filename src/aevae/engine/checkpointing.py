"""Checkpoints that survive a crash, and resuming a run from one.

- `AtomicCheckpointIO` writes each checkpoint to a temporary file and renames it
  over the old one, so a run killed while saving leaves the previous checkpoint
  whole (Lightning's own writer truncates the target first).
- `StepCheckpoint` refreshes `last.ckpt` every N optimizer steps, so a killed run
  loses at most N steps, not an epoch.
- `ModelCheckpoint` is Lightning's, re-rooted on load: a run dir that was moved or
  copied resumes from and tests its own checkpoints, not the original's.
- `resume_overrides` turns `aevae-train resume=RUN_DIR` into the overrides of the
  original run plus its run dir and its last checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aevae.config import PER_LAUNCH_KEYS, UserError
from aevae.files import atomic_open

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files appear whole or not at all: write `<path>.tmp`, fsync, rename. A full
    or failing disk stops the run with one line naming the newest checkpoint, still intact."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        with atomic_open(path, "wb", intact=_newest_checkpoint(path.parent)) as f:
            torch.save(checkpoint, f)


def _newest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a failed save leaves as the one to resume from."""
    checkpoints = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder.is_dir() else []
    return max(checkpoints, key=lambda p: p.stat().st_mtime_ns, default=None)


class StepCheckpoint(Checkpoint):
    """Save `<dirpath>/last.ckpt` every `every_n_train_steps` optimizer steps (null: never)."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = 1000) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps or 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step and step % self.every_n_train_steps == 0:
            trainer.save_checkpoint(self.dirpath / LAST, weights_only=False)  # all state: it resumes runs


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, whose state loads into a run dir that was moved or copied.

    Its state in a checkpoint holds absolute paths (its `dirpath`, the best and last
    checkpoints). Loaded by a run whose `dirpath` differs, Lightning keeps only the old
    `best_model_path`, so a copied run dir would test (and keep comparing against) the
    original's best checkpoint. Here every path that lay in the old folder is moved to
    this one first, so the whole state restores. The file itself keeps Lightning's format.
    Same class name as Lightning's: the state is stored under it, so checkpoints of either
    load into both.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(rerooted(state_dict, self.dirpath))


#: The checkpoint paths in ModelCheckpoint's state (Lightning's format; tested against it).
CHECKPOINT_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def rerooted(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """ModelCheckpoint `state` with the paths in its saved `dirpath` moved into `dirpath`."""
    old = state.get("dirpath")
    if not old or not dirpath or old == dirpath:
        return state

    def move(path: Any) -> Any:
        if not path or Path(path).parent != Path(old):
            return path
        return os.path.join(dirpath, Path(path).name)

    state = {**state, "dirpath": dirpath}
    state.update({key: move(state[key]) for key in CHECKPOINT_PATH_KEYS if key in state})
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(path): score for path, score in state["best_k_models"].items()}
    return state


def peek(path: str | Path, key: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint's contents (weights only: nothing in it is executed); `key` names it in errors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{key}={path} does not exist or is not a file") from None
    except Exception as err:  # pickle, zip and unsafe-global errors all mean "not our checkpoint"
        raise UserError(f"{key}={path} is not a readable checkpoint: {str(err).splitlines()[0]}") from err


#: Model settings a checkpoint must share with the run that loads it.
MODEL_KEYS = ("_target_", "latent_dim", "hidden_dims", "image_shape", "net")


def check_compatible(checkpoint: dict[str, Any], model_cfg: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint of another model with a message naming the settings that differ."""
    saved = (checkpoint.get("aevae_config") or {}).get("model")
    if saved is None:
        raise UserError(f"ckpt_path={path} is not an aevae checkpoint (it holds no aevae_config)")
    differ = [
        f"{key}: checkpoint {_short(saved.get(key))}, this run {_short(model_cfg.get(key))}"
        for key in MODEL_KEYS
        if saved.get(key) != model_cfg.get(key)
    ]
    if differ:
        raise UserError(
            f"ckpt_path={path} holds a different model ({'; '.join(differ)}); use the same model settings"
        )


def _short(value: Any) -> str:
    if isinstance(value, str) and value.startswith("aevae.models."):
        return value.rsplit(".", 1)[1]
    return str(value).replace(" ", "")


def resume_overrides(run_dir: str | Path, extra: list[str]) -> list[str]:
    """The command-line overrides that continue the run in `run_dir`, with `extra` on top."""
    import yaml

    run_dir = Path(run_dir)
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise UserError(
            f"resume={run_dir} is not an aevae-train run dir (no .hydra/overrides.yaml there) "
            "nor a sweep dir (no multirun.yaml)"
        )
    if not (run_dir / "checkpoints" / LAST).is_file():
        raise UserError(f"resume={run_dir}: there is no checkpoints/{LAST} to resume from")
    original = [
        o
        for o in yaml.safe_load(saved.read_text()) or []
        if o.split("=")[0].lstrip("+~") not in PER_LAUNCH_KEYS
    ]
    keys = {o.split("=")[0].lstrip("+~") for o in extra}
    kept = [o for o in original if o.split("=")[0].lstrip("+~") not in keys]
    return [*kept, *extra, f"hydra.run.dir={run_dir}", f"ckpt_path={run_dir / 'checkpoints' / LAST}"]
