"""The data sets by name, and the image shape a data config gives, known before anything loads."""

from __future__ import annotations

from typing import Any

#: Read (and downloaded) by torchvision: 60k + 10k grey 28x28 images each.
MNIST_FAMILY = ("mnist", "fashion_mnist", "kmnist")
#: Read from files of their own (`aevae.data.sources`): `image_folder` and `array` from
#: `data.path`, the others from `data.root` in torchvision's layout.
FILE_DATASETS = ("cifar10", "svhn", "celeba", "image_folder", "array")
NAMES = (*MNIST_FAMILY, *FILE_DATASETS)
#: data.image_size where a data set resizes its images and none is set.
DEFAULT_IMAGE_SIZE = 64


def image_shape(
    name: str, image_size: int | None = None, channels: int | None = None, path: str | None = None
) -> list[int]:
    """[C, H, W] of the images a data config gives, known without decoding any image (an
    array's from its header): what models, nets and likelihoods are built for."""
    from aevae.data.idx import DataError

    if name in MNIST_FAMILY:
        return [1, 28, 28]
    if name in ("cifar10", "svhn"):
        return [3, 32, 32]
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    if name == "celeba":
        return [3, size, size]
    if name == "image_folder":
        return [int(channels or 3), size, size]
    if name == "array":
        if not path:
            raise DataError("data=array needs data.path=FILE (.npy, .npz or .pt of uint8 images)")
        from aevae.data.sources import array_shape

        return list(array_shape(path))
    raise DataError(f"data.name={name!r} is not known; choose one of {list(NAMES)}")


def shape_of(data: Any) -> list[int]:
    """`image_shape` of a data config node (the `${aevae.image_shape:${data}}` resolver)."""
    from omegaconf import OmegaConf

    name = data.get("name", "mnist")
    if name in ("image_folder", "array") and ("path" not in data or OmegaConf.is_missing(data, "path")):
        from aevae.data.idx import DataError

        what = "DIR (a folder of images)" if name == "image_folder" else "FILE (.npy, .npz or .pt)"
        raise DataError(f"data={name} needs data.path={what}")
    return image_shape(name, data.get("image_size"), data.get("channels"), data.get("path"))


def num_classes(data: Any) -> int:
    """The classes of a data config's labels (0: unlabelled), known without decoding images: 10
    for the MNIST family, CIFAR-10 and SVHN; an image folder's top-level sub-folders (of
    train/ where it has one); an array's largest label + 1."""
    from pathlib import Path

    name = data.get("name", "mnist")
    if name in (*MNIST_FAMILY, "cifar10", "svhn"):
        return 10
    if name == "image_folder":
        folder = Path(str(data.get("path"))).expanduser()
        folder = folder / "train" if (folder / "train").is_dir() else folder
        return (
            len([d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")])
            if folder.is_dir()
            else 0
        )
    if name == "array":
        from aevae.data.sources import read_array

        labels = read_array(str(data.get("path")))[1]
        return int(labels.max()) + 1 if len(labels) and int(labels.max()) >= 0 else 0
    return 0
