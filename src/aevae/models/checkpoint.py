"""Rebuild a trained model from an aevae checkpoint alone."""

from __future__ import annotations

from pathlib import Path

import torch

from aevae.checkpointing import peek
from aevae.config import UserError
from aevae.models.base import Autoencoder


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Autoencoder:
    """The model saved in `path`, in eval mode.

    Checkpoints hold the run's config as plain containers, so they load with
    `torch.load(weights_only=True)`: nothing in them is executed.
    """
    from hydra.utils import instantiate

    checkpoint = peek(path)
    config = checkpoint.get("aevae_config") if isinstance(checkpoint, dict) else None
    if not config or "state_dict" not in checkpoint:
        raise UserError(
            f"{path} is not an aevae checkpoint (it has no aevae_config); train it with aevae-train"
        )
    model: Autoencoder = instantiate(config["model"], _convert_="all")
    model.load_state_dict(checkpoint["state_dict"])
    model.run_config = config
    return model.to(map_location).eval()
