"""The latent space in TensorBoard's Projector: codes of test images with their labels and thumbnails."""

from __future__ import annotations

import lightning as L

from aevae.callbacks.tensorboard import (
    SPLITS,
    TensorBoardCallback,
    choice,
    evaluating,
    pick_images,
    positive_int,
)
from aevae.models import Autoencoder
from aevae.sampling.latents import encode_all


def class_names(datamodule: object) -> list[str] | None:
    """The data set's class names by label (torchvision's, a folder's sub-folders), if it has them."""
    return getattr(datamodule, "classes", None)


class LatentProjector(TensorBoardCallback):
    """Writes a fixed, seeded selection of `num_points` images of `split` as an embedding:
    their codes (the VAE's posterior means), labels and class names as metadata, and the
    images as sprite thumbnails, so the Projector shows the latent space coloured by class.

    Written once at the end of fit; with `every_n_epochs` also every N epochs, one
    embedding per step to compare in the Projector's tensor menu.
    """

    name = "projector"

    def __init__(
        self,
        num_points: int = 2000,
        split: str = "test",
        seed: int = 0,
        every_n_epochs: int | None = None,
        tag: str = "latent_means",
    ) -> None:
        super().__init__(every_n_epochs)
        self.num_points = positive_int(f"callbacks.{self.name}.num_points", num_points)
        self.split = choice(f"callbacks.{self.name}.split", split, SPLITS)
        self.seed, self.tag = seed, tag
        self._written_steps: set[int] = set()

    def write(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        writer, step = self.writer(trainer), trainer.global_step
        if writer is None or step in self._written_steps:
            return
        images, labels = pick_images(trainer, self.split, self.num_points, self.seed, pl_module.device)
        with evaluating(pl_module):
            codes = encode_all(pl_module, images, labels)
        names = class_names(trainer.datamodule)
        labels = labels.tolist()
        if names is not None:
            metadata = [[label, names[label] if label >= 0 else "-"] for label in labels]
            header = ["label", "class"]
        else:
            metadata, header = labels, None
        writer.add_embedding(
            codes.cpu(),
            metadata=metadata,
            label_img=images.cpu(),
            global_step=step,
            tag=self.tag,
            metadata_header=header,
        )
        self._written_steps.add(step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        if self.due(trainer):
            self.write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        self.write(trainer, pl_module)
