"""An encoder plus a linear head, trained on labels: pretraining put to the test, and the digit judge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from aevae.config import UserError
from aevae.models.base import Autoencoder
from aevae.models.module import Model


class CodeOf(nn.Module):
    """The code a trained autoencoder gives an image (the VAE's posterior mean), as a module."""

    def __init__(self, autoencoder: Autoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: Tensor) -> Tensor:
        return self.autoencoder.encode(x)


def pretrained_encoder(path: str | Path, latent_dim: int, hidden_dims: Sequence[int]) -> CodeOf:
    """The encoder of the AE/VAE in `path` (a checkpoint or a run dir), refused when its
    shape is not the one configured: the same command without `pretrained` must train
    the same network from scratch."""
    from aevae.models.checkpoint import load_checkpoint, resolve_checkpoint

    autoencoder = load_checkpoint(resolve_checkpoint(path, key="pretrained"), key="pretrained")
    saved = {"latent_dim": autoencoder.latent_dim, "hidden_dims": list(autoencoder.hparams.hidden_dims)}
    wanted = {"latent_dim": int(latent_dim), "hidden_dims": [int(h) for h in hidden_dims]}
    if differ := [
        f"{key}={saved[key]} there, {wanted[key]} here" for key in saved if saved[key] != wanted[key]
    ]:
        raise UserError(
            f"pretrained={path} has another shape ({'; '.join(differ)}); set latent_dim and "
            "model.hidden_dims to the pretrained model's"
        )
    del autoencoder.decoder  # only the encoder is fine-tuned
    return CodeOf(autoencoder.train())


class Classifier(Model):
    """Cross-entropy on labelled images through an encoder and a linear head on its
    (batch-normalized) code.

    The encoder is the `net`'s (784-128-32 by default) with random weights, or with
    `pretrained` (a checkpoint or run dir of an AE/VAE) that model's encoder, fine-tuned
    as a whole. Trains on the chunked fast path; logs `loss` and `error` while training,
    `loss` and `accuracy` on val/test.
    """

    term_names = ("loss", "error")

    def __init__(
        self,
        latent_dim: int,
        net: Callable[..., Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        hidden_dims: Sequence[int] = (128,),
        lr: float = 1e-3,
        image_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        pretrained: str | None = None,
    ) -> None:
        if int(num_classes) < 2:
            raise UserError(
                f"model=classifier needs labelled images of at least 2 classes, and the data have "
                f"{num_classes}; an image folder's classes are its sub-folders"
            )
        metrics = {
            "loss": torchmetrics.MeanMetric,
            "accuracy": lambda: torchmetrics.Accuracy("multiclass", num_classes=num_classes),
        }
        super().__init__(optimizer, lr, metrics)
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(d) for d in image_shape)
        if pretrained:
            self.encoder: nn.Module = pretrained_encoder(pretrained, latent_dim, hidden_dims)
        else:
            self.encoder = net(image_shape=self.image_shape, hidden_dims=hidden_dims).encoder(self.latent_dim)
        # An AE code has no fixed scale: standardize it, so one head suits any encoder.
        self.head = nn.Sequential(nn.BatchNorm1d(self.latent_dim), nn.Linear(self.latent_dim, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits `[B, num_classes]`."""
        return self.head(self.encoder(x))

    def batch_terms(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        logits, labels = self(batch[0]), batch[1]
        return {
            "loss": F.cross_entropy(logits, labels, reduction="none"),
            "error": (logits.argmax(1) != labels).float(),
        }

    def evaluate(self, batch: Sequence[Tensor]) -> dict[str, Any]:
        logits, labels = self(batch[0]), batch[1]
        return {"loss": F.cross_entropy(logits, labels, reduction="none"), "accuracy": (logits, labels)}
