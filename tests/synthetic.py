"""Small synthetic data sets in each set's real on-disk format, and crops of the real photos."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from aevae.data.sources import CIFAR10_FILES, CIFAR10_FOLDER

REPO = Path(__file__).resolve().parents[1]
#: The real photos beside MNIST: $AEVAE_DATA/photos, else the checkout's ../shared/data/photos.
PHOTOS = Path(os.environ.get("AEVAE_DATA") or REPO.parent / "shared" / "data").resolve() / "photos"


def write_cifar10(root: Path, per_batch: int = 6, seed: int = 0) -> None:
    """CIFAR-10's python pickle batches (rows of 3,072 bytes, R then G then B planes)."""
    rng = np.random.default_rng(seed)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    for name in CIFAR10_FILES["train"] + CIFAR10_FILES["test"]:
        entry = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_svhn(root: Path, n_train: int, n_test: int, seed: int = 1) -> None:
    """SVHN's MATLAB files: X [32, 32, 3, N] uint8, y [N, 1] with 10 standing for the digit 0."""
    from scipy import io as sio

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        sio.savemat(root / name, {"X": x, "y": y})


def write_celeba(root: Path, partitions: list[int], seed: int = 2) -> None:
    """CelebA's layout: celeba/img_align_celeba/NNNNNN.jpg (178x218) + list_eval_partition.txt."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, part in enumerate(partitions):
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {part}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def photo_crops(folder: Path, n: int, size: int = 48, seed: int = 0) -> list[Path]:
    """`n` random square crops (`size` to 2 x `size` px) of the real photos in shared/data/photos,
    written as PNG (and every fifth as JPEG) into class folders named after their photo."""
    rng = np.random.default_rng(seed)
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    written = []
    for i in range(n):
        photo = photos[i % len(photos)]
        with Image.open(photo) as image:
            side = int(rng.integers(size, 2 * size + 1))
            x, y = (int(rng.integers(0, max(1, d - side))) for d in image.size)
            crop = image.crop((x, y, x + side, y + side))
            out = folder / photo.stem / f"{i:05d}.{'jpg' if i % 5 == 4 else 'png'}"
            out.parent.mkdir(parents=True, exist_ok=True)
            (crop.convert("RGB") if out.suffix == ".jpg" else crop).save(out)
        written.append(out)
    return written
