"""What each experiment tracker takes, and how: the one place that knows the logger types.

Lightning's loggers share `log_metrics` and `log_hyperparams`, but not images:
TensorBoard takes them through its SummaryWriter, MLflow through its client's
`log_image`, W&B through `WandbLogger.log_image`; a CSV file takes none. The
callbacks ask this module instead of testing logger types themselves.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import Tensor

from aevae.config import UserError

#: The loggers that show images.
IMAGE_LOGGERS = (TensorBoardLogger, MLFlowLogger, WandbLogger)
#: Loggers whose client is an optional package: logger class name -> (pip extra, module, its name).
OPTIONAL = {"MLFlowLogger": ("mlflow", "mlflow", "MLflow"), "WandbLogger": ("wandb", "wandb", "W&B (wandb)")}


def is_tensorboard(logger: Logger) -> bool:
    return isinstance(logger, TensorBoardLogger)


def takes_images(logger: Logger) -> bool:
    return isinstance(logger, IMAGE_LOGGERS)


def needs_extra(what: str, package: str, extra: str) -> UserError:
    """The one line for a missing optional package: what needs it and the pip command."""
    return UserError(f"{what} needs {package}: pip install 'aevae[{extra}]'")


def prepare(key: str, logger_cfg: Any) -> None:
    """Before a logger of the `logger` group is built: its client is installed (else one line
    naming the extra), and MLflow may use a local file store."""
    target = str(logger_cfg.get("_target_", "")).rsplit(".", 1)[-1]
    if target in OPTIONAL:
        extra, module, package = OPTIONAL[target]
        if importlib.util.find_spec(module) is None:
            raise needs_extra(f"logger={key}", package, extra)
    uri = str(logger_cfg.get("tracking_uri") or "")
    if target == "MLFlowLogger" and (uri.startswith("file:") or "://" not in uri):
        # MLflow 3 keeps its file store (`mlruns/`) in maintenance and refuses it unless this is
        # set; a database store would need the full `mlflow` package (SQLAlchemy, Alembic).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # A store of its own in each run dir has no experiment yet: Lightning warns every run.
        mlflow_log = logging.getLogger("lightning.pytorch.loggers.mlflow")
        if _new_experiment_notice not in mlflow_log.filters:
            mlflow_log.addFilter(_new_experiment_notice)


def _new_experiment_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).endswith("not found. Creating it.")


def log_hparams(trainer: L.Trainer, params: dict[str, Any]) -> None:
    """`params` to every logger but TensorBoard, whose HParams session the caller writes: MLflow
    params, W&B config, the CSV logger's hparams.yaml."""
    for logger in trainer.loggers:
        if not is_tensorboard(logger):
            logger.log_hyperparams(params)


def grid_pixels(grid: Tensor) -> Tensor:
    """A grid `[C, H, W]` in [0, 1] as uint8 pixels on the CPU: `[H, W]` where its channels are
    equal (torchvision's make_grid repeats a gray image's channel three times), else `[H, W, 3]`."""
    pixels = grid.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    if len(pixels) == 1 or all(torch.equal(pixels[0], channel) for channel in pixels[1:]):
        return pixels[0]
    return pixels.permute(1, 2, 0).contiguous()


def log_image(trainer: L.Trainer, tag: str, grid: Tensor, step: int) -> None:
    """`grid [C, H, W]` (values in [0, 1]) as a gray or RGB image under `tag` at `step`, in
    every logger that shows images; on rank zero only."""
    if not trainer.is_global_zero:
        return
    pixels = grid_pixels(grid)
    for logger in trainer.loggers:
        if is_tensorboard(logger):
            from aevae.callbacks.tensorboard import add_png_image

            add_png_image(logger.experiment, tag, pixels, step)
        elif isinstance(logger, MLFlowLogger):  # under artifacts/images/, with a step slider in its UI
            logger.experiment.log_image(logger.run_id, pixels.numpy(), key=tag, step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[pixels.numpy()], step=step)
