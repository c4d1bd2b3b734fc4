"""Image grids of what the model makes of fixed inputs, one per epoch, so epochs compare at a glance.

Inputs (images, the samplers' draws) come from fixed seeds: the same inputs every
epoch and in every run with the same data, so a change in a grid is a change
in the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import make_grid

from aevae.callbacks.tensorboard import SPLITS, ImageCallback, choice, pick_images, positive_int
from aevae.config import UserError
from aevae.models import Autoencoder
from aevae.sampling.latents import INTERPOLATIONS, encode_all
from aevae.sampling.pictures import decoded_images, interpolation_grid, per_class, reconstruction_grid
from aevae.sampling.samplers import make_sampler


class Reconstructions(ImageCallback):
    """Fixed images of a split (rows of `per_row`), each row followed by its reconstructions."""

    name, tag = "reconstructions", "media/reconstructions"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 16,
        per_row: int = 8,
        seed: int = 0,
        split: str = "val",
    ) -> None:
        super().__init__(every_n_epochs)
        self.num_images = positive_int(f"callbacks.{self.name}.num_images", num_images)
        self.per_row = positive_int(f"callbacks.{self.name}.per_row", per_row)
        if self.num_images % self.per_row:
            raise UserError(
                f"callbacks.{self.name}.num_images={num_images} must be a multiple of per_row={per_row}"
            )
        self.seed, self.split = seed, choice(f"callbacks.{self.name}.split", split, SPLITS)
        self._images: tuple[Tensor, Tensor] | None = None

    def inputs(self, trainer: L.Trainer, pl_module: Autoencoder) -> tuple[Tensor, Tensor]:
        """The fixed images and their labels."""
        if self._images is None:
            self._images = pick_images(trainer, self.split, self.num_images, self.seed, pl_module.device)
        return self._images

    def render(self, trainer: L.Trainer, pl_module: Autoencoder) -> Tensor:
        images, labels = self.inputs(trainer, pl_module)
        return reconstruction_grid(pl_module, images, self.per_row, labels)


class PriorSamples(ImageCallback):
    """Decodings of codes drawn by the `sampler` (aevae.sampling.samplers) from a generator seeded
    with `seed` every epoch: the model's own prior (VAE, by default), or a Gaussian (mixture)
    fitted to the codes of a fixed set of `fit_images` training images, refitted each epoch (AE,
    by default). Side by side this shows how much better a VAE's latent space is to sample from
    than an AE's. A conditional model's grid has a column per class and a row per draw (the first
    ceil(num_samples / classes) draws)."""

    name, tag = "prior_samples", "media/prior_samples"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 64,
        per_row: int = 8,
        seed: int = 0,
        fit_images: int = 2000,
        sampler: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(every_n_epochs)
        self.num_samples = positive_int(f"callbacks.{self.name}.num_samples", num_samples)
        self.per_row = positive_int(f"callbacks.{self.name}.per_row", per_row)
        self.fit_images = positive_int(f"callbacks.{self.name}.fit_images", fit_images)
        self.seed = seed
        self.sampler_options = dict(sampler or {"name": "auto"})
        self._fit_images: tuple[Tensor, Tensor] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        make_sampler(self.sampler_options, pl_module)  # a sampler the model refuses: before training

    def inputs(self, trainer: L.Trainer, pl_module: Autoencoder) -> Tensor:
        """The fixed training images whose codes a fitted sampler is fitted to."""
        if self._fit_images is None:  # with their labels, for a conditional model's encoder
            self._fit_images = pick_images(trainer, "train", self.fit_images, self.seed, pl_module.device)
        return self._fit_images[0]

    def latents(self, trainer: L.Trainer, pl_module: Autoencoder) -> Tensor:
        sampler = make_sampler(self.sampler_options, pl_module)
        if sampler.fits:
            self.inputs(trainer, pl_module)
            sampler.fit(encode_all(pl_module, *self._fit_images))  # type: ignore[misc]
        generator = torch.Generator(pl_module.device).manual_seed(self.seed)
        return sampler.sample(self.num_samples, generator, labels=pl_module.sample_labels(self.num_samples))

    def render(self, trainer: L.Trainer, pl_module: Autoencoder) -> Tensor:
        codes, labels, per_row = self.latents(trainer, pl_module), None, self.per_row
        if pl_module.conditional:  # one class per column, one code per row
            per_row = pl_module.num_classes
            codes, labels = per_class(pl_module, codes[: -(-len(codes) // per_row)])
        images = decoded_images(pl_module, codes, labels)
        return make_grid(images, nrow=per_row, pad_value=0.5)


class Interpolations(ImageCallback):
    """One row per fixed pair of images: the first image, decodings of `steps` points on the path
    between their codes (both ends included), the second image. `mode`: slerp | lerp."""

    name, tag = "interpolations", "media/interpolations"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_pairs: int = 8,
        steps: int = 10,
        mode: str = "slerp",
        seed: int = 0,
        split: str = "val",
    ) -> None:
        super().__init__(every_n_epochs)
        self.num_pairs = positive_int(f"callbacks.{self.name}.num_pairs", num_pairs)
        self.steps = positive_int(f"callbacks.{self.name}.steps", steps)
        if self.steps < 2:
            raise UserError(f"callbacks.{self.name}.steps={steps} must be at least 2 (the two ends)")
        self.mode = choice(f"callbacks.{self.name}.mode", mode, tuple(INTERPOLATIONS))
        self.seed, self.split = seed, choice(f"callbacks.{self.name}.split", split, SPLITS)
        self._pairs: tuple[Tensor, Tensor, Tensor] | None = None

    def inputs(self, trainer: L.Trainer, pl_module: Autoencoder) -> tuple[Tensor, Tensor, Tensor]:
        """The fixed pairs: start images and end images, `[num_pairs, C, H, W]` each, and their
        labels `[2, num_pairs]`."""
        if self._pairs is None:
            images, labels = pick_images(trainer, self.split, 2 * self.num_pairs, self.seed, pl_module.device)
            self._pairs = (images[: self.num_pairs], images[self.num_pairs :], labels.view(2, -1))
        return self._pairs

    def render(self, trainer: L.Trainer, pl_module: Autoencoder) -> Tensor:
        start, end, labels = self.inputs(trainer, pl_module)
        return interpolation_grid(pl_module, start, end, self.steps, self.mode, (labels[0], labels[1]))
