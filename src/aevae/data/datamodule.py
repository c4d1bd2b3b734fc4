"""The image DataModule: every data set read once into uint8 tensors, served from the device.

The MNIST family is read (and downloaded) by torchvision; CIFAR-10, SVHN, CelebA, image
folders and arrays by `aevae.data.sources`, decoded once into the `aevae.data.cache`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchvision import datasets

from aevae.data import sources
from aevae.data.batches import TensorBatches, binarize, shuffled, to_float
from aevae.data.cache import cache_folder, fingerprint, load_or_build
from aevae.data.embedded import embedded_root, has_mnist
from aevae.data.idx import DataError, check_idx, idx_count, unpack_archives
from aevae.data.noise import Corruption
from aevae.data.shapes import NAMES, image_shape
from aevae.engine import internals
from aevae.engine.distributed import eval_shard
from aevae.files import write_text

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
ON_BAD_FILE = ("error", "skip")
#: The run dir's list of the files data.on_bad_file=skip left out.
SKIPPED_FILE = "skipped_files.txt"


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


class ImageDataModule(L.LightningDataModule):
    """Any image data set as device-resident uint8 tensors `[N, C, H, W]`.

    `name` picks the source: the MNIST family (torchvision reads and downloads it into
    `root`), `cifar10`, `svhn`, `celeba` (their files under `root`, in torchvision's
    layout), `image_folder` (any tree of image files at `path`; top-level sub-folders are
    classes) or `array` (a `.npy`/`.npz`/`.pt` file at `path`). Sets read from files are
    decoded once, converted to `channels` and centre-cropped/resized to `image_size`, into
    the data cache (`$AEVAE_CACHE`, or beside the data), which later runs map from disk.

    Splits: a set's own test (and validation) split where it has one; else
    `test_fraction`/`val_fraction` of the images, seeded by `split_seed`; the validation
    split of a set without one is `val_size` images carved from its training images.
    `train_size` caps the training split. Batches come from :class:`TensorBatches`; the
    training order is reshuffled every epoch from `seed` and the epoch number, so runs are
    reproducible. Training items are chunks of `steps_per_chunk` batches (see
    :mod:`aevae.engine.chunked`).

    `label_fraction` keeps a seeded subset of the training split (a few labelled
    images, as for semi-supervised fine-tuning). `noise` (gaussian, salt_pepper,
    mask) at `noise_level` corrupts every split's inputs on the device; batches
    are then `(noisy, labels, clean)` and a model learns noisy -> clean.
    `on_bad_file=skip` leaves out image files that cannot be decoded (listed in the run
    dir's `skipped_files.txt`) instead of stopping at the first. On a GPU the splits live in
    its memory up to `device_memory_gb` (default: half of it); a larger one streams its batches
    from pinned host memory with asynchronous copies.
    """

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
        path: str | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        on_bad_file: str = "error",
        device_memory_gb: float | None = None,
    ) -> None:
        super().__init__()
        if name not in NAMES:
            raise DataError(f"data.name={name!r} is not known; choose one of {list(NAMES)}")
        if name in ("image_folder", "array") and not path:
            raise DataError(f"data={name} needs data.path=<{'folder' if name == 'image_folder' else 'file'}>")
        if on_bad_file not in ON_BAD_FILE:
            raise DataError(
                f"data.on_bad_file={on_bad_file!r} is not known; choose one of {list(ON_BAD_FILE)}"
            )
        self.name, self.download = name, download
        self.root = Path(root if root is not None else default_root()).expanduser()
        self.path = Path(path).expanduser() if path else None
        self.image_size, self.channels = image_size, channels
        self.image_shape = tuple(image_shape(name, image_size, channels, path))
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.on_bad_file = on_bad_file
        self.device_memory_gb = device_memory_gb
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
        self.classes: list[str] | None = None  # class names by label, where the data have them
        self.skipped_files: list[str] = []

    # -- reading ---------------------------------------------------------------
    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One official split of an MNIST-family set, through torchvision."""
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
        self.classes = list(ds.classes)
        return ds.data.unsqueeze(1).contiguous(), ds.targets

    def _download(self) -> None:
        """Fetch CIFAR-10 / SVHN / CelebA through torchvision (which checks their md5 sums)."""
        if self.name == "cifar10" and not (self.root / sources.CIFAR10_FOLDER).is_dir():
            datasets.CIFAR10(str(self.root), download=True)
        elif self.name == "svhn":
            for split in ("train", "test"):
                if not (self.root / sources.SVHN_FILES[split]).is_file():
                    datasets.SVHN(str(self.root), split=split, download=True)
        elif self.name == "celeba" and not (self.root / "celeba" / "img_align_celeba").is_dir():
            datasets.CelebA(str(self.root), split="all", target_type=[], download=True)

    def _read_files(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The splits of a set read from its own files, through the data cache."""
        failed = None
        if self.download and self.name in ("cifar10", "svhn", "celeba"):
            try:
                self._download()
            except (RuntimeError, OSError) as err:  # offline, a mirror down, a bad archive
                failed = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                log.warning(
                    "data=%s: download failed (%s); reading what is in %s", self.name, failed, self.root
                )
        files, settings, build = self._source()
        key = fingerprint(files, settings)
        location = self.path if self.path is not None else self.root
        try:
            contents = load_or_build(cache_folder(location), self.name, key, build)
        except DataError as err:
            if failed is None:
                raise
            raise DataError(f"{err} (the download failed: {failed})") from None
        self.classes = contents.get("classes")
        self.skipped_files = list(contents.get("skipped", []))
        if self.skipped_files:
            log.warning(
                "data.on_bad_file=skip: %d file(s) could not be read and were left out, e.g. %s",
                len(self.skipped_files),
                self.skipped_files[0],
            )
        return {split: (item["images"], item["labels"]) for split, item in contents["splits"].items()}

    def _source(self) -> tuple[list[str | Path], dict, Any]:
        """The files a set is made of, the settings that shape its tensors, and its decoder."""
        settings = {"name": self.name, "image_size": self.image_size, "channels": self.channels}
        size, root, classes = self.image_shape[1], self.root, None
        if self.name == "image_folder":
            return self._image_folder(size, settings)
        if self.name == "cifar10":
            folder = root / sources.CIFAR10_FOLDER
            files = _present([folder / name for names in sources.CIFAR10_FILES.values() for name in names])
            read, classes = (lambda: sources.read_cifar10(root)), sources.CIFAR10_CLASSES
        elif self.name == "svhn":
            files = _present([root / sources.SVHN_FILES[split] for split in ("train", "test")])
            read, classes = (lambda: sources.read_svhn(root)), sources.SVHN_CLASSES
        elif self.name == "celeba":
            folder = root / "celeba"
            files = _present([folder / "list_eval_partition.txt"])
            files += sources.list_images(folder / "img_align_celeba")
            read = lambda: sources.read_celeba(root, size)  # noqa: E731
        else:  # array
            files, read = [self.path], lambda: {"all": sources.read_array(self.path)}
        return files, settings, lambda: {"splits": _items(read()), "classes": classes}

    def _image_folder(self, size: int, settings: dict) -> tuple[list[str | Path], dict, Any]:
        folder = self.path
        if not folder.is_dir():
            raise DataError(f"data.path={folder} is not a folder of images")
        named = [s for s in ("train", "val", "test") if (folder / s).is_dir()]
        parts = {s: folder / s for s in named} if "train" in named else {"all": folder}
        listed, classes = sources.labelled_files(parts)
        files = [f for paths, _ in listed.values() for f in paths]
        if not files:
            raise DataError(
                f"data.path={folder} holds no image files ({', '.join(sources.IMAGE_EXTENSIONS)}); "
                "point data.path at a folder of images"
            )
        settings = {**settings, "on_bad_file": self.on_bad_file}
        channels = self.image_shape[0]

        def build() -> dict:
            skipped: list[str] = []

            def skip(path: str | Path, err: Exception) -> None:
                skipped.append(str(path))

            splits = {}
            on_bad = skip if self.on_bad_file == "skip" else None
            for split, (paths, labels) in listed.items():
                images = sources.decode_all(paths, channels, size, on_bad_file=on_bad)
                left_out = set(skipped)
                kept = [label for path, label in zip(paths, labels, strict=True) if str(path) not in left_out]
                splits[split] = (images, torch.tensor(kept, dtype=torch.long))
            return {"splits": _items(splits), "classes": classes or None, "skipped": skipped}

        return files, settings, build

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
        """Training batches one rank sees per epoch (for the MNIST family known from the IDX
        header, before any image is loaded; the other sets are read, from their cache)."""
        if "train" not in self.splits and self.name not in DATASETS:
            self.setup()
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
        if not self.download:
            return
        if self.name in DATASETS:
            self._read(train=True), self._read(train=False)
        else:
            self._read_files()  # downloads, then decodes into the cache the other ranks read

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._load()
        self._write_skipped()  # once the trainer (and so the run dir) is known

    def _load(self) -> None:
        if self.name in DATASETS:
            read = {"train": self._read(train=True), "test": self._read(train=False)}
        else:
            read = self._read_files()
        if "test" not in read:  # a folder or an array: seeded fractions of its (training) images
            pool = read.pop("all", None) or read.pop("train")
            read.update(self._fractions(pool, with_val="val" not in read))
        images, labels = read["train"]
        n_val = 0 if "val" in read else self.val_size
        n_train = self.train_size if self.train_size is not None else len(images) - n_val
        if n_val < 0 or n_train < 1 or n_train + n_val > len(images):
            raise DataError(
                f"data.train_size={n_train} + data.val_size={n_val} must fit in the "
                f"{len(images)} training images"
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        train_idx, val_idx = order[: self.labelled(n_train)], order[n_train : n_train + n_val]
        self.splits["train"] = (images[train_idx], labels[train_idx])
        self.splits["val"] = read["val"] if "val" in read else (images[val_idx], labels[val_idx])
        self.splits["test"] = read["test"] if "test" in read else self.splits["val"]
        if self.name not in DATASETS:  # the MNIST family's sizes are checked with the config
            self._check_sizes()
        fixed = ("train", "val", "test") if self.binarize == "static" else ("val", "test")
        if self.binarize != "none":  # dynamic: val/test binarized once too, so epochs compare
            for i, split in enumerate(fixed):
                images, labels = self.splits[split]
                key = (self.binarize_seed, -1, i)  # never a training draw's (epoch >= 0)
                self.splits[split] = ((binarize(to_float(images), key) * 255).to(torch.uint8), labels)

    def _fractions(
        self, pool: tuple[torch.Tensor, torch.Tensor], with_val: bool
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """`pool` split by a seeded permutation into test (`test_fraction`), validation
        (`val_fraction`, if `with_val`) and training images (the rest)."""
        val_fraction = self.val_fraction if with_val else 0.0
        if not (
            0 <= val_fraction < 1 and 0 <= self.test_fraction < 1 and val_fraction + self.test_fraction < 1
        ):
            raise DataError(
                f"data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction} "
                "must each be in [0, 1) and leave images to train on"
            )
        images, labels = pool
        n = len(images)
        n_test, n_val = round(n * self.test_fraction), round(n * val_fraction)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        parts = {"test": order[:n_test], "train": order[n_test + n_val :]}
        if with_val:
            parts["val"] = order[n_test : n_test + n_val]
        return {name: (images[idx], labels[idx]) for name, idx in parts.items()}

    def _check_sizes(self) -> None:
        where = self.path or self.root
        n_train = len(self.splits["train"][0])
        if n_train < self.batch_size:
            raise DataError(
                f"data={self.name} at {where} has {n_train} training images, fewer than one batch "
                f"(data.batch_size={self.batch_size}); lower data.batch_size or add images"
            )
        for split in ("val", "test"):
            if len(self.splits[split][0]) == 0:
                fix = (
                    f"raise data.{split}_fraction (or add a {split}/ folder)"
                    if self.name in ("image_folder", "array")
                    else f"raise data.{split}_size"
                )
                raise DataError(f"data={self.name} at {where} leaves no {split} images; {fix}")

    def _write_skipped(self) -> None:
        """The files `on_bad_file=skip` left out, listed in the run dir (rank zero)."""
        trainer = self.trainer
        if not self.skipped_files or trainer is None or not trainer.is_global_zero:
            return
        write_text(
            Path(trainer.default_root_dir) / SKIPPED_FILE, "".join(f"{n}\n" for n in self.skipped_files)
        )

    # -- serving ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _on_device(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Move a split to the training device once and keep it there; on a GPU, a split that
        does not fit in what is left of `device_memory_gb` stays in pinned host memory, and its
        batches are copied over as they are needed (`TensorBatches.device`)."""
        images, labels = self.splits[split]
        device = self.device
        if images.device == device or images.is_pinned():
            return images, labels
        if device.type == "cuda" and images.nbytes > self._device_room(device):
            log.info(
                "data: the %s split (%.1f GB) does not fit in data.device_memory_gb; it streams from "
                "pinned host memory",
                split,
                images.nbytes / 1e9,
            )
            images = images.pin_memory()
        else:
            images = images.to(device)
        self.splits[split] = (images, labels.to(device))
        return self.splits[split]

    def _device_room(self, device: torch.device) -> int:
        """Bytes of `device_memory_gb` (default: half the GPU) not yet taken by resident splits."""
        budget = self.device_memory_gb
        total = (
            budget * 1e9 if budget is not None else torch.cuda.get_device_properties(device).total_memory / 2
        )
        taken = sum(x.nbytes for x, _ in self.splits.values() if x.device == device)
        return int(total - taken)

    def train_dataloader(self) -> TensorBatches:
        images, labels = self._on_device("train")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = shuffled(len(images), self.seed, num_replicas=world, rank=rank)

        def processed() -> int:  # chunks trained so far this epoch, Lightning's own count
            return internals.batches_processed(trainer)

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
            device=self.device,
        )

    def _eval_batches(self, split: str) -> TensorBatches:
        images, labels = self._on_device(split)
        trainer = self.trainer
        shard = None
        if trainer is not None and trainer.world_size > 1:
            shard = eval_shard(len(images), trainer.global_rank, trainer.world_size)
        return TensorBatches(
            images, labels, self.eval_batch_size, shard, corrupt=self.corrupt, device=self.device
        )

    def val_dataloader(self) -> TensorBatches:
        return self._eval_batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._eval_batches("test")


#: The name runs and checkpoints of the MNIST-only days refer to (`_target_` in their configs).
MNISTDataModule = ImageDataModule


def _present(files: list[Path]) -> list[Path]:
    """The files that exist (a missing one is named by the reader, with where to get it)."""
    return [f for f in files if f.exists()]


def _items(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    return {split: {"images": images, "labels": labels} for split, (images, labels) in splits.items()}
