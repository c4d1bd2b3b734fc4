"""Image data sets on disk, read once into uint8 tensors `[N, C, H, W]` and int64 labels `[N]`.

Each reader returns its splits as `{"train": (images, labels), ...}`; an image without a
label has label -1. The readers decode everything up front (the training loop never
touches a file); `aevae.data.cache` keeps the result so that later runs map it from disk.

- `read_cifar10`: the extracted `cifar-10-batches-py/` (python pickle batches).
- `read_svhn`: `train_32x32.mat` / `test_32x32.mat` (MATLAB files, read with SciPy).
- `read_celeba`: `celeba/img_align_celeba/` + `celeba/list_eval_partition.txt`.
- `read_image_folder`: any tree of image files, class sub-folders, optional train/val/test.
- `read_array`: a `.npy`, `.npz` or `.pt` file of uint8 images.

torchvision's dataset classes download these sets and check their md5 sums, but they also
refuse any copy whose checksum differs (a re-packed or partial copy, a test fixture), and
CelebA's class decodes one JPEG per `__getitem__`. So the project downloads through
torchvision and reads the extracted files with these small readers, which give exactly
torchvision's arrays (tests/test_sources.py holds them equal).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aevae.data.idx import DataError

Splits = dict[str, tuple[Tensor, Tensor]]

#: The file endings read as images (torchvision's ImageFolder's list).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# -- CIFAR-10 ----------------------------------------------------------------------------
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_cifar10(root: str | Path) -> Splits:
    """CIFAR-10's python batches under `root/cifar-10-batches-py/`: train 50k, test 10k, 3x32x32."""
    folder = Path(root) / CIFAR10_FOLDER
    splits = {}
    for split, names in CIFAR10_FILES.items():
        images, labels = [], []
        for name in names:
            entry = _unpickle(_need(folder / name, "cifar10", root))
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        splits[split] = (torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))
    return splits


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # latin1: the batches were pickled by Python 2 (what torchvision reads them with too)
            return pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated or not a pickle at all
        raise DataError(
            f"{path} is not a readable CIFAR batch ({err}); delete it and set data.download=true"
        ) from None


# -- SVHN --------------------------------------------------------------------------------
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SVHN_CLASSES = [str(digit) for digit in range(10)]


def read_svhn(root: str | Path, splits: Sequence[str] = ("train", "test")) -> Splits:
    """SVHN's cropped digits under `root/`: `X [32, 32, 3, N]` and `y [N, 1]` with 10 for the digit 0."""
    try:
        from scipy import io as sio
    except ImportError:
        raise DataError("data=svhn reads MATLAB files with SciPy: pip install 'aevae[svhn]'") from None
    out = {}
    for split in splits:
        path = _need(Path(root) / SVHN_FILES[split], "svhn", root)
        try:
            mat = sio.loadmat(path)
        except Exception as err:
            raise DataError(
                f"{path} is not a readable SVHN .mat file ({err}); delete it and set data.download=true"
            ) from None
        labels = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1))
        labels[labels == 10] = 0  # as torchvision does: the digit 0 is stored as class 10
        out[split] = (torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))), labels)
    return out


# -- CelebA ------------------------------------------------------------------------------
CELEBA_PARTITIONS = {"0": "train", "1": "val", "2": "test"}


def read_celeba(root: str | Path, image_size: int = 64, crop: int = 148) -> Splits:
    """CelebA's aligned faces (178x218), centre-cropped to `crop` and resized to `image_size`,
    split by `list_eval_partition.txt` (0 train, 1 val, 2 test). Unlabelled: labels -1."""
    folder = Path(root) / "celeba"
    partition = _need(folder / "list_eval_partition.txt", "celeba", root)
    images_dir = _need(folder / "img_align_celeba", "celeba", root)
    files: dict[str, list[Path]] = {name: [] for name in CELEBA_PARTITIONS.values()}
    for line_no, line in enumerate(partition.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in CELEBA_PARTITIONS:
            raise DataError(f"{partition}:{line_no} is not '<image> <0|1|2>': {line.strip()!r}")
        files[CELEBA_PARTITIONS[parts[1]]].append(images_dir / parts[0])
    return {
        split: (decode_all(paths, 3, image_size, crop=crop), torch.full((len(paths),), -1, dtype=torch.long))
        for split, paths in files.items()
    }


# -- image files -------------------------------------------------------------------------
def decode(path: str | Path, channels: int, size: int | None, crop: int | None = None) -> Tensor:
    """One image file as uint8 `[channels, size, size]`: centre-cropped to a `crop` square first
    (if given), then its shorter side resized to `size` and the rest centre-cropped."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    with Image.open(path) as img:
        image = F.pil_to_tensor(img.convert("L" if channels == 1 else "RGB"))
    if crop is not None:
        image = F.center_crop(image, [min(crop, *image.shape[1:])])
    if size is not None and tuple(image.shape[1:]) != (size, size):
        image = F.center_crop(F.resize(image, size, antialias=True), [size, size])
    return image.contiguous()


def decode_all(
    paths: Sequence[str | Path],
    channels: int,
    size: int | None,
    crop: int | None = None,
    on_bad_file: Callable[[str | Path, Exception], None] | None = None,
) -> Tensor:
    """Decode `paths` on all cores into one uint8 `[N, C, size, size]` tensor. A file that
    cannot be decoded raises a DataError naming it, or with `on_bad_file` is reported there
    and left out."""
    if not paths:
        return torch.empty((0, channels, size or 0, size or 0), dtype=torch.uint8)

    def one(path: str | Path) -> Tensor | None:
        try:
            return decode(path, channels, size, crop)
        except Exception as err:  # PIL and torchvision raise many kinds for a damaged file
            if on_bad_file is None:
                raise DataError(
                    f"{path} cannot be read as an image ({str(err).splitlines()[0] if str(err) else err!r}); "
                    "remove or replace it, or set data.on_bad_file=skip"
                ) from None
            on_bad_file(path, err)
            return None

    # Pillow's decoders and torch's resize release the GIL: threads use every core, and no
    # tensor is copied between processes
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = [image for image in pool.map(one, paths) if image is not None]
    if not images:
        return torch.empty((0, channels, size or 0, size or 0), dtype=torch.uint8)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise DataError(
            f"the images under {Path(paths[0]).parent} have different sizes {sorted(shapes)[:3]}...; "
            "set data.image_size to resize them to one"
        )
    return torch.stack(images)


def list_images(folder: str | Path) -> list[str]:
    """Every image file below `folder`, sorted, hidden files and folders left out. Paths are
    strings: a Path object per file costs more than the walk itself on a folder of 50,000."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            os.path.join(dirpath, name)
            for name in filenames
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def labelled_files(folders: dict[str, Path]) -> tuple[dict[str, tuple[list[str], list[int]]], list[str]]:
    """The images below each of `folders` (by split), labelled by their top-level sub-folder:
    the sorted names of those across all splits are the classes (as in torchvision's
    ImageFolder); images directly in a split's folder get -1."""
    found = {split: list_images(folder) for split, folder in folders.items()}
    tops = {
        split: [_top_folder(path, len(str(folders[split]))) for path in paths]
        for split, paths in found.items()
    }
    classes = sorted({top for split_tops in tops.values() for top in split_tops if top is not None})
    index = {name: i for i, name in enumerate(classes)}
    labelled = {
        split: (found[split], [-1 if t is None else index[t] for t in tops[split]]) for split in found
    }
    return labelled, classes


def _top_folder(path: str, root_length: int) -> str | None:
    """The first folder of `path` (found by `list_images` below a root of `root_length`
    characters) below that root, or None for a file directly in it."""
    head, sep, _ = path[root_length:].lstrip(os.sep).partition(os.sep)
    return head if sep else None


# -- arrays ------------------------------------------------------------------------------
ARRAY_IMAGE_KEYS = ("images", "x", "data", "X")
ARRAY_LABEL_KEYS = ("labels", "y", "targets", "Y")


def read_array(path: str | Path) -> tuple[Tensor, Tensor]:
    """uint8 images from a `.npy`, `.npz` or `.pt` file, laid out `N×H×W`, `N×H×W×C` or
    `N×C×H×W` (C 1 or 3), with optional labels (`.npz`/`.pt`: under `labels`, `y` or `targets`)."""
    path = Path(path)
    images, labels = _images_and_labels(_load(path), path)
    images = torch.as_tensor(images if isinstance(images, Tensor) else np.asarray(images))
    if images.dtype != torch.uint8:
        raise DataError(
            f"data.path={path} holds {images.dtype} images; data=array takes uint8 pixels 0-255 "
            "(e.g. (x * 255).round().astype(numpy.uint8))"
        )
    order = _layout(tuple(images.shape), path)
    images = images.unsqueeze(1) if order is None else images.permute(*order)
    if labels is None:
        labels = torch.full((len(images),), -1, dtype=torch.long)
    else:
        labels = torch.as_tensor(labels if isinstance(labels, Tensor) else np.asarray(labels))
        labels = labels.long().reshape(-1)
        if len(labels) != len(images):
            raise DataError(f"data.path={path} holds {len(images)} images but {len(labels)} labels")
    return images.contiguous(), labels


def array_shape(path: str | Path) -> tuple[int, int, int]:
    """(C, H, W) of the images in an array file, from its header where the format allows."""
    path = Path(path)
    images, _ = _images_and_labels(_load(path), path)
    shape = tuple(images.shape)
    order = _layout(shape, path)
    return (1, *shape[1:]) if order is None else tuple(shape[i] for i in order[1:])  # type: ignore[return-value]


def _load(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"data.path={path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt"):
        raise DataError(
            f"data.path={path}: data=array reads .npy, .npz or .pt files, not {suffix or 'files without one'}"
        )
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r")
        if suffix == ".npz":
            return np.load(path)  # lazy: a member is read when it is used
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise DataError(f"data.path={path} cannot be read ({str(err).splitlines()[0]})") from None


def _images_and_labels(content: object, path: Path) -> tuple[object, object | None]:
    if isinstance(content, dict) or hasattr(content, "files"):  # a dict or numpy's NpzFile
        keys = list(content.files) if hasattr(content, "files") else list(content)  # type: ignore[union-attr]
        image_key = next((k for k in ARRAY_IMAGE_KEYS if k in keys), None)
        if image_key is None:
            raise DataError(
                f"data.path={path} holds {sorted(keys)}; put the images under one of {list(ARRAY_IMAGE_KEYS)}"
            )
        label_key = next((k for k in ARRAY_LABEL_KEYS if k in keys), None)
        return content[image_key], None if label_key is None else content[label_key]  # type: ignore[index]
    if isinstance(content, tuple | list) and len(content) == 2:
        return content[0], content[1]
    return content, None


def _layout(shape: tuple[int, ...], path: Path) -> tuple[int, int, int, int] | None:
    """The permutation that lays an image array out as N×C×H×W; None for N×H×W (grey)."""
    if len(shape) == 3:
        return None
    if len(shape) == 4:
        if shape[1] in (1, 3) and shape[-1] not in (1, 3):
            return (0, 1, 2, 3)
        if shape[-1] in (1, 3):
            return (0, 3, 1, 2)
    raise DataError(
        f"data.path={path} holds an array of shape {shape}; "
        "expected N×H×W, N×H×W×C or N×C×H×W with C = 1 or 3"
    )


# -- where files were looked for ---------------------------------------------------------
HOW_TO_GET = {
    "cifar10": "run with data.download=true (torchvision downloads cifar-10-python.tar.gz and extracts it)",
    "svhn": "run with data.download=true (torchvision downloads the .mat files)",
    "celeba": (
        "download img_align_celeba.zip and list_eval_partition.txt from the CelebA site into "
        "<data.root>/celeba/ and unzip the images there (or try data.download=true)"
    ),
}


def _need(path: Path, name: str, root: str | Path) -> Path:
    if not path.exists():
        raise DataError(f"data={name}: {path} not found under data.root={root}; {HOW_TO_GET[name]}")
    return path
