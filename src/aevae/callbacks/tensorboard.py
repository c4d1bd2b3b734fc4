"""What the TensorBoard callbacks share: finding the writer, the epoch schedule, fixed picks of data.

Every callback here works once per epoch (or once per run) on rank zero, outside
the training step, so it never adds per-step work or a device sync to training.
"""

from __future__ import annotations

import contextlib
import io
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from aevae.callbacks import trackers
from aevae.config import UserError
from aevae.data import to_float
from aevae.engine import internals
from aevae.sampling.pictures import fixed_indices

log = logging.getLogger("aevae.callbacks")

SPLITS = ("train", "val", "test")

#: Trainers whose skipped callbacks were already announced (one info line per run).
_announced: weakref.WeakSet[L.Trainer] = weakref.WeakSet()


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger, if it has one."""
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def announce_skips(trainer: L.Trainer) -> None:
    """Log one info line naming every callback that cannot write to some logger of this run: those
    that reach none of them are skipped; those that reach only some (the TensorBoard-only pieces
    beside MLflow, the images beside a CSV file) skip the others."""
    if trainer in _announced or not trainer.is_global_zero:
        return
    _announced.add(trainer)
    loggers = trainer.loggers
    skipped: list[str] = []
    partial: dict[tuple[str, ...], list[str]] = {}  # the loggers missed -> the callbacks missing them
    for callback in trainer.callbacks:
        if (reaches := getattr(callback, "reaches", None)) is None:
            continue
        unreached = tuple(type(lg).__name__ for lg in loggers if not reaches(lg))
        if len(unreached) == len(loggers):
            skipped.append(callback.name)
        elif unreached:
            partial.setdefault(unreached, []).append(callback.name)
    parts = [f"callbacks {', '.join(names)} skip {', '.join(missed)}" for missed, names in partial.items()]
    if skipped:
        names = ", ".join(type(lg).__name__ for lg in loggers) or "none"
        parts.insert(0, f"callbacks {', '.join(skipped)} skipped: no logger takes them (loggers: {names})")
    if parts:
        log.info("; ".join(parts))


def positive_int(key: str, value: Any, optional: bool = False) -> int | None:
    """`value` as a positive int, or a UserError naming the config key."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or null" if optional else "a positive integer"
        raise UserError(f"{key}={value!r} must be {allowed}")
    return value


def choice(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    """`value` if it is one of `allowed`, or a UserError naming the key and the choices."""
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not known; choose one of {sorted(allowed)}")
    return value


def pick_images(
    trainer: L.Trainer, split: str, count: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """A seeded, fixed selection of a split's images (float, [0, 1]) and labels, on `device`."""
    datamodule = trainer.datamodule
    if datamodule is None or split not in getattr(datamodule, "splits", {}):
        raise UserError(f"the TensorBoard callbacks need a datamodule with a {split!r} split")
    images, labels = datamodule.splits[split]
    index = fixed_indices(len(images), count, seed).to(images.device)
    return to_float(images[index]).to(device), labels[index].to(device)


def add_png_image(writer: Any, tag: str, pixels: Tensor, step: int) -> None:
    """Log uint8 `pixels`, `[H, W]` (gray) or `[H, W, 3]` (RGB), as a PNG of that many channels.

    `SummaryWriter.add_image` would expand a gray grid to RGB through float copies and encode
    that at a slow compression level: several times the time of this.
    """
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    pixels = pixels.numpy()
    with io.BytesIO() as png:
        Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(
            png, format="PNG", compress_level=1
        )
        encoded = png.getvalue()
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=encoded)
    internals.tensorboard_file_writer(writer).add_summary(
        Summary(value=[Summary.Value(tag=tag, image=image)]), step
    )


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode without gradients, then back to the module's previous mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


class TensorBoardCallback(L.Callback):
    """Base: writes on rank zero, every `every_n_epochs` epochs, to the loggers it `reaches`
    (here TensorBoard's, through its SummaryWriter).

    Where no logger of the run is one it reaches, it does nothing; one info line per run
    names all callbacks that skip, rather than a warning per callback.
    """

    #: The callback's key in the `callbacks` config group, used in messages.
    name = "tensorboard"

    def __init__(self, every_n_epochs: int | None = 1) -> None:
        self.every_n_epochs = positive_int(
            f"callbacks.{self.name}.every_n_epochs", every_n_epochs, optional=True
        )

    def reaches(self, logger: Any) -> bool:
        """Whether this callback writes to `logger`."""
        return trackers.is_tensorboard(logger)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        announce_skips(trainer)

    def writer(self, trainer: L.Trainer) -> Any:
        """The logger's SummaryWriter on rank zero, else None."""
        logger = tensorboard_logger(trainer)
        return logger.experiment if logger is not None and trainer.is_global_zero else None

    def due(self, trainer: L.Trainer) -> bool:
        """Whether the epoch now ending is one to log (epochs count from 1 here)."""
        return self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0


class ImageCallback(TensorBoardCallback):
    """One image grid per due epoch under `tag`, rendered after the epoch's validation, sent to
    every logger that shows images (TensorBoard, MLflow, W&B: `aevae.callbacks.trackers`)."""

    tag = "media/image"

    def reaches(self, logger: Any) -> bool:
        return trackers.takes_images(logger)

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """The grid to log, `[C, H, W]` in [0, 1], gray (channel 0 is logged); runs in eval mode, no grad."""
        raise NotImplementedError

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer) or not trainer.is_global_zero:
            return
        if not any(trackers.takes_images(logger) for logger in trainer.loggers):
            return
        with evaluating(pl_module):
            grid = self.render(trainer, pl_module)
        trackers.log_image(trainer, self.tag, grid, trainer.global_step)
