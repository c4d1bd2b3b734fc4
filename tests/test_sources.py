"""The data set readers on small synthetic files in each set's real on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevae.data import DataError
from aevae.data.sources import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    decode_all,
    labelled_files,
    read_array,
    read_celeba,
    read_cifar10,
    read_svhn,
)
from synthetic import write_celeba, write_cifar10, write_svhn


def test_cifar10_reader_equals_torchvision(tmp_path: Path) -> None:
    from torchvision.datasets import CIFAR10

    class Unchecked(CIFAR10):  # the files' md5 sums are not the real ones: check for presence only
        train_list = [[name, None] for name in CIFAR10_FILES["train"]]
        test_list = [[name, None] for name in CIFAR10_FILES["test"]]
        meta = {**CIFAR10.meta, "md5": None}

    write_cifar10(tmp_path)
    splits = read_cifar10(tmp_path)
    for split, train in (("train", True), ("test", False)):
        reference = Unchecked(str(tmp_path), train=train)
        images, labels = splits[split]
        assert images.shape == (len(reference), 3, 32, 32) and images.dtype == torch.uint8
        assert torch.equal(images, torch.from_numpy(reference.data).permute(0, 3, 1, 2))
        assert labels.tolist() == reference.targets


def test_cifar10_missing_and_damaged_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1 not found.*data.download=true"):
        read_cifar10(tmp_path)
    write_cifar10(tmp_path)
    (tmp_path / CIFAR10_FOLDER / "test_batch").write_bytes(b"\x80\x02 not a pickle")
    with pytest.raises(DataError, match="test_batch is not a readable CIFAR batch"):
        read_cifar10(tmp_path)


def test_svhn_reader_equals_torchvision(tmp_path: Path) -> None:
    from torchvision.datasets import SVHN

    class Unchecked(SVHN):
        split_list = {k: [url, name, None] for k, (url, name, _) in SVHN.split_list.items()}

    write_svhn(tmp_path, n_train=7, n_test=5)
    splits = read_svhn(tmp_path)
    for split in ("train", "test"):
        reference = Unchecked(str(tmp_path), split=split)
        images, labels = splits[split]
        assert torch.equal(images, torch.from_numpy(reference.data))
        assert torch.equal(labels, torch.from_numpy(reference.labels))
        assert labels.min() >= 0 and labels.max() <= 9


def test_celeba_reader_splits_by_partition_and_crops(tmp_path: Path) -> None:
    write_celeba(tmp_path, [0, 0, 0, 1, 2, 2])
    folder = tmp_path / "celeba"
    splits = read_celeba(tmp_path, image_size=32)
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 3, "val": 1, "test": 2}
    assert splits["train"][0].shape == (3, 3, 32, 32) and (splits["test"][1] == -1).all()
    (folder / "list_eval_partition.txt").write_text("000000.jpg train\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt:1 is not"):
        read_celeba(tmp_path)


def test_image_files_mixed_modes_and_sizes_become_one_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    files = []
    modes = [("RGB", (50, 40)), ("L", (33, 64)), ("RGBA", (32, 32)), ("P", (80, 80))]
    for i, (mode, size) in enumerate(modes):
        image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
        files.append(tmp_path / f"{i}.{'png' if i % 2 else 'bmp'}")
        image.save(files[-1])
    rgb = decode_all(files, channels=3, size=24)
    grey = decode_all(files, channels=1, size=24)
    assert rgb.shape == (4, 3, 24, 24) and grey.shape == (4, 1, 24, 24)
    assert rgb.dtype == grey.dtype == torch.uint8
    # a grey file in an RGB set: three planes equal to its grey decoding
    assert all(torch.equal(rgb[1, c], grey[1, 0]) for c in range(3))
    assert not torch.equal(rgb[0, 0], rgb[0, 1])  # a colour file keeps its colours


def test_a_corrupt_image_is_named_or_skipped(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"bad.jpg cannot be read as an image.*data.on_bad_file=skip"):
        decode_all([good, bad], 3, 8)
    skipped: list[Path] = []
    images = decode_all([good, bad], 3, 8, on_bad_file=lambda path, err: skipped.append(path))
    assert images.shape == (1, 3, 8, 8) and skipped == [bad]


def test_class_sub_folders_label_the_images(tmp_path: Path) -> None:
    for name in ("cats/a.png", "cats/deep/b.png", "dogs/c.jpg", "top.png", ".hidden/d.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listed, classes = labelled_files({"all": tmp_path})
    files, labels = listed["all"]
    assert classes == ["cats", "dogs"]
    named = {Path(f).relative_to(tmp_path).as_posix(): label for f, label in zip(files, labels, strict=True)}
    assert named == {"cats/a.png": 0, "cats/deep/b.png": 0, "dogs/c.jpg": 1, "top.png": -1}


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "NHWC1"])
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_arrays_in_every_layout(tmp_path: Path, layout: str, suffix: str) -> None:
    rng = np.random.default_rng(4)
    nchw = rng.integers(0, 256, (5, 1 if layout in ("NHW", "NHWC1") else 3, 6, 7), dtype=np.uint8)
    stored = {"NHW": nchw[:, 0], "NHWC": nchw.transpose(0, 2, 3, 1), "NCHW": nchw}.get(
        layout, nchw.transpose(0, 2, 3, 1)
    )
    labels = np.arange(5)
    path = tmp_path / f"images{suffix}"
    if suffix == ".npy":
        np.save(path, stored)
    elif suffix == ".npz":
        np.savez(path, images=stored, labels=labels)
    else:
        torch.save({"images": torch.from_numpy(stored), "labels": torch.from_numpy(labels)}, path)
    images, read_labels = read_array(path)
    assert torch.equal(images, torch.from_numpy(nchw))
    assert read_labels.tolist() == ([-1] * 5 if suffix == ".npy" else labels.tolist())


def test_bad_arrays_get_one_line(tmp_path: Path) -> None:
    np.save(tmp_path / "float.npy", np.zeros((2, 4, 4), dtype=np.float32))
    with pytest.raises(DataError, match="float32 images; data=array takes uint8"):
        read_array(tmp_path / "float.npy")
    np.save(tmp_path / "flat.npy", np.zeros((2, 16), dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape \(2, 16\); expected N×H×W"):
        read_array(tmp_path / "flat.npy")
    np.savez(tmp_path / "keys.npz", pixels=np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"holds \['pixels'\]; put the images under one of"):
        read_array(tmp_path / "keys.npz")
    np.savez(tmp_path / "count.npz", x=np.zeros((2, 4, 4), dtype=np.uint8), y=np.zeros(3))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        read_array(tmp_path / "count.npz")
    with pytest.raises(DataError, match="does not exist"):
        read_array(tmp_path / "missing.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="reads .npy, .npz or .pt files"):
        read_array(tmp_path / "x.csv")
