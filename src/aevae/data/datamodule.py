"""MNIST-family DataModule: torchvision reads (and downloads), tensors serve."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from torchvision import datasets

from aevae.data.batches import TensorBatches, binarize, shuffled, to_float
from aevae.data.embedded import embedded_root, has_mnist
from aevae.data.idx import DataError, check_idx, idx_count, unpack_archives
from aevae.data.noise import Corruption
from aevae.distributed import eval_shard

log = logging.getLogger(__name__)

#: data.binarize: none (grey levels), dynamic (a fresh Bernoulli draw each time an image is
#: used; val/test drawn once) or static (one seeded draw of every split).
BINARIZE = ("none", "dynamic", "static")

#: Training images in MNIST, Fashion-MNIST and KMNIST alike.
OFFICIAL_TRAIN_SIZE = 60_000

DATASETS: dict[str, type[datasets.MNIST]] = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "kmnist": datasets.KMNIST,
}


#: data.root when neither it nor $AEVAE_DATA is set (conf/data/mnist.yaml says the same).
DEFAULT_ROOT = "./data"


def default_root() -> str:
    """`$AEVAE_DATA` when set, else `./data` (MNIST: the shipped copy when neither holds one)."""
    return os.environ.get("AEVAE_DATA") or DEFAULT_ROOT


def _falls_back(root: Path) -> bool:
    """MNIST comes from the copy shipped with aevae when `root` holds none, if `root` is the
    default or a folder that exists: a named folder that does not exist is more likely a typo
    than a wish for the shipped copy, and gets the missing-data error (or the download)."""
    return not has_mnist(root) and (root.is_dir() or root == Path(DEFAULT_ROOT))


class MNISTDataModule(L.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST as device-resident uint8 tensors.

    Splits: `train_size`/`val_size` carved from the official 60k training set
    with a seeded permutation (`split_seed`), test = the official 10k. Batches
    come from :class:`TensorBatches`; the training order is reshuffled every
    epoch from `seed` and the epoch number, so runs are reproducible. Training
    items are chunks of `steps_per_chunk` batches (see :mod:`aevae.chunked`).

    `label_fraction` keeps a seeded subset of the training split (a few labelled
    images, as for semi-supervised fine-tuning). `noise` (gaussian, salt_pepper,
    mask) at `noise_level` corrupts every split's inputs on the device; batches
    are then `(noisy, labels, clean)` and a model learns noisy -> clean.
    """

    image_shape = (1, 28, 28)

    def __init__(
        self,
        name: str = "mnist",
        root: str | None = None,
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        train_size: int | None = None,
        split_seed: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        steps_per_chunk: int = 1,
        global_batch_size: int | None = None,
        binarize: str = "none",
        binarize_seed: int = 0,
        label_fraction: float = 1.0,
        noise: str | None = None,
        noise_level: float = 0.3,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise DataError(f"data.name={name!r} is not known; choose one of {sorted(DATASETS)}")
        self.name, self.download = name, download
        self.root = Path(root if root is not None else default_root()).expanduser()
        if name == "mnist" and _falls_back(self.root):  # before any download is tried
            log.info("%s holds no MNIST: reading the copy shipped with aevae", self.root)
            self.root = embedded_root()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_size = val_size, train_size
        self.split_seed, self.seed, self.drop_last = split_seed, seed, drop_last
        self.steps_per_chunk = steps_per_chunk
        self.global_batch_size = global_batch_size
        if binarize not in BINARIZE:
            raise DataError(f"data.binarize={binarize!r} is not known; choose one of {list(BINARIZE)}")
        self.binarize, self.binarize_seed = binarize, binarize_seed
        self.label_fraction = float(label_fraction)
        self.corrupt = Corruption(noise, noise_level, seed) if noise else None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- reading ---------------------------------------------------------------
    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        cls = DATASETS[self.name]
        raw = self.root / cls.__name__ / "raw"
        unpack_archives(raw, [Path(name).stem for name, _ in cls.resources])
        split = "train" if train else "t10k"
        for name, item_shape in (
            (f"{split}-images-idx3-ubyte", self.image_shape[1:]),
            (f"{split}-labels-idx1-ubyte", ()),
        ):
            if (raw / name).is_file():
                check_idx(raw / name, item_shape)
        try:
            ds = cls(str(self.root), train=train, download=self.download)
        except RuntimeError as err:
            offline = (
                f"put the four IDX files (or their .gz archives) in {raw}, "
                f"or point data.root (or $AEVAE_DATA) at the folder holding {cls.__name__}/raw/"
            )
            if self.download:  # torchvision's message lists every mirror tried; its last line says why
                reason = str(err).strip().splitlines()[-1].strip("<>")
                raise DataError(f"could not download {cls.__name__} ({reason}); offline, {offline}") from err
            raise DataError(
                f"{cls.__name__} not found in {raw}; {offline}, or run with data.download=true"
            ) from err
        return ds.data.unsqueeze(1).contiguous(), ds.targets

    def set_world_size(self, world_size: int) -> int:
        """Fix the per-process batch for `world_size` processes; returns the global batch.

        With `global_batch_size` set, each process takes its share, so the optimization
        (and the learning rate that suits it) stays the same as the device count changes;
        without it, each process takes `batch_size` and the global batch grows with them.
        """
        if self.global_batch_size is not None:
            if self.global_batch_size % world_size:
                raise DataError(
                    f"data.global_batch_size={self.global_batch_size} must be a multiple of the "
                    f"{world_size} training processes"
                )
            self.batch_size = self.global_batch_size // world_size
        return self.batch_size * world_size

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches one rank sees per epoch, known before any image is loaded."""
        if "train" in self.splits:
            n = len(self.splits["train"][0])
        elif self.train_size is not None:
            n = self.labelled(self.train_size)
        else:
            n = idx_count(self.root / DATASETS[self.name].__name__ / "raw" / "train-images-idx3-ubyte")
            n = self.labelled((n if n is not None else OFFICIAL_TRAIN_SIZE) - self.val_size)
        per_rank = -(-n // world_size)  # DistributedSampler pads every rank to the same length
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def labelled(self, n_train: int) -> int:
        """Training images kept by `label_fraction` out of `n_train`."""
        return max(1, round(n_train * self.label_fraction))

    def prepare_data(self) -> None:
        """Download once per node (Lightning calls this on local rank 0 only)."""
        if self.download:
            self._read(train=True), self._read(train=False)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = self._read(train=True)
        n_val = self.val_size
        n_train = self.train_size if self.train_size is not None else len(images) - n_val
        if n_val < 0 or n_train < 1 or n_train + n_val > len(images):
            raise DataError(
                f"data.train_size={n_train} + data.val_size={n_val} must fit in the "
                f"{len(images)} training images"
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        train_idx, val_idx = order[: self.labelled(n_train)], order[n_train : n_train + n_val]
        self.splits["train"] = (images[train_idx], labels[train_idx])
        self.splits["val"] = (images[val_idx], labels[val_idx])
        self.splits["test"] = self._read(train=False)
        fixed = ("train", "val", "test") if self.binarize == "static" else ("val", "test")
        if self.binarize != "none":  # dynamic: val/test binarized once too, so epochs compare
            for i, split in enumerate(fixed):
                images, labels = self.splits[split]
                key = (self.binarize_seed, -1, i)  # never a training draw's (epoch >= 0)
                self.splits[split] = ((binarize(to_float(images), key) * 255).to(torch.uint8), labels)

    # -- serving ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _on_device(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Move a split to the training device once and keep it there."""
        images, labels = self.splits[split]
        if images.device != self.device:
            images, labels = images.to(self.device), labels.to(self.device)
            self.splits[split] = (images, labels)
        return images, labels

    def train_dataloader(self) -> TensorBatches:
        images, labels = self._on_device("train")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = shuffled(len(images), self.seed, num_replicas=world, rank=rank)

        def processed() -> int:  # chunks trained so far this epoch, Lightning's own count
            return trainer.fit_loop.epoch_loop.batch_progress.current.processed

        return TensorBatches(
            images,
            labels,
            self.batch_size,
            sampler,
            drop_last=self.drop_last,
            steps_per_chunk=self.steps_per_chunk,
            progress=processed if trainer is not None else None,
            binarize_seed=self.binarize_seed if self.binarize == "dynamic" else None,
            corrupt=self.corrupt,
        )

    def _eval_batches(self, split: str) -> TensorBatches:
        images, labels = self._on_device(split)
        trainer = self.trainer
        shard = None
        if trainer is not None and trainer.world_size > 1:
            shard = eval_shard(len(images), trainer.global_rank, trainer.world_size)
        return TensorBatches(images, labels, self.eval_batch_size, shard, corrupt=self.corrupt)

    def val_dataloader(self) -> TensorBatches:
        return self._eval_batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._eval_batches("test")
