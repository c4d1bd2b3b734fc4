"""Every data set through the one ImageDataModule: splits, shapes, labels, cache, bad input."""

from __future__ import annotations

import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevae.data import DataError, ImageDataModule
from conftest import QUIET, aevae_train, command, read_metrics, run
from synthetic import PHOTOS, photo_crops, write_celeba, write_cifar10, write_svhn


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AEVAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def sizes(dm: ImageDataModule) -> list[int]:
    return [len(dm.splits[s][0]) for s in ("train", "val", "test")]


def test_cifar10_and_svhn_carve_val_from_train_and_keep_their_test(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=10)
    dm = ImageDataModule(name="cifar10", root=str(tmp_path), download=False, val_size=8, batch_size=4)
    dm.setup()
    assert sizes(dm) == [42, 8, 10] and dm.image_shape == (3, 32, 32)
    assert dm.splits["train"][0].dtype == torch.uint8 and dm.classes[0] == "airplane"
    assert dm.train_batches_per_epoch() == 11
    write_svhn(tmp_path / "svhn", n_train=30, n_test=6)
    dm = ImageDataModule(name="svhn", root=str(tmp_path / "svhn"), download=False, val_size=5, batch_size=4)
    dm.setup()
    assert sizes(dm) == [25, 5, 6] and int(dm.splits["test"][1].max()) <= 9


def test_celeba_uses_its_partition_and_image_size(tmp_path: Path) -> None:
    write_celeba(tmp_path, [0] * 6 + [1, 1, 2, 2])
    dm = ImageDataModule(name="celeba", root=str(tmp_path), download=False, image_size=32, batch_size=2)
    dm.setup()
    assert sizes(dm) == [6, 2, 2] and dm.splits["train"][0].shape[1:] == (3, 32, 32)


def test_missing_files_say_where_and_how(tmp_path: Path) -> None:
    for name, what in (("cifar10", "cifar-10-batches-py"), ("svhn", "train_32x32.mat"), ("celeba", "celeba")):
        dm = ImageDataModule(name=name, root=str(tmp_path), download=False)
        with pytest.raises(DataError, match=rf"{what}.* not found under data.root={tmp_path}.*download"):
            dm.setup()


def write_folder(root: Path, layout: dict[str, int], seed: int = 0) -> None:
    """`layout`: relative folder -> number of images; mixed sizes, grey and colour, PNG and JPEG."""
    rng = np.random.default_rng(seed)
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            side = int(rng.integers(20, 60))
            pixels = rng.integers(0, 256, (side, side + 5, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert("L" if i % 3 == 0 else "RGB")
            image.save(root / folder / f"{i}.{'jpg' if i % 2 else 'png'}")


def test_an_image_folder_with_classes_is_split_by_seeded_fractions(tmp_path: Path) -> None:
    write_folder(tmp_path / "pics", {"cat": 12, "dog": 8})
    kwargs = {"name": "image_folder", "path": str(tmp_path / "pics"), "image_size": 16, "batch_size": 4}
    dm = ImageDataModule(**kwargs, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    assert sizes(dm) == [14, 2, 4] and dm.classes == ["cat", "dog"]
    assert dm.splits["train"][0].shape[1:] == (3, 16, 16)
    assert sorted(set(torch.cat([dm.splits[s][1] for s in ("train", "val", "test")]).tolist())) == [0, 1]
    again = ImageDataModule(**kwargs, val_fraction=0.1, test_fraction=0.2)
    again.setup()  # the same split from the same seed, now read from the cache
    assert all(torch.equal(dm.splits[s][0], again.splits[s][0]) for s in ("train", "val", "test"))
    grey = ImageDataModule(**kwargs, channels=1)
    grey.setup()
    assert grey.splits["train"][0].shape[1:] == (1, 16, 16) and grey.image_shape == (1, 16, 16)


def test_train_val_test_folders_are_the_splits(tmp_path: Path) -> None:
    write_folder(tmp_path / "pics", {"train/a": 6, "train/b": 4, "val/a": 2, "test/b": 3})
    dm = ImageDataModule(name="image_folder", path=str(tmp_path / "pics"), image_size=8, batch_size=2)
    dm.setup()
    assert sizes(dm) == [10, 2, 3] and dm.classes == ["a", "b"]
    assert dm.splits["val"][1].tolist() == [0, 0] and dm.splits["test"][1].tolist() == [1, 1, 1]


def test_a_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    write_folder(tmp_path / "pics", {".": 10})
    dm = ImageDataModule(name="image_folder", path=str(tmp_path / "pics"), image_size=8, batch_size=2)
    dm.setup()
    assert (torch.cat([dm.splits[s][1] for s in ("train", "val", "test")]) == -1).all()
    assert dm.classes is None


def test_a_corrupt_file_stops_the_run_or_is_skipped_and_listed(tmp_path: Path) -> None:
    write_folder(tmp_path / "pics", {".": 12})
    (tmp_path / "pics" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    kwargs = {"name": "image_folder", "path": str(tmp_path / "pics"), "image_size": 8, "batch_size": 2}
    with pytest.raises(DataError, match=r"broken.png cannot be read as an image.*on_bad_file=skip"):
        ImageDataModule(**kwargs).setup()
    dm = ImageDataModule(**kwargs, on_bad_file="skip")
    dm.setup()
    assert sum(sizes(dm)) == 12 and dm.skipped_files == [str(tmp_path / "pics" / "broken.png")]


@pytest.mark.parametrize(
    "layout,message",
    [
        ({}, "holds no image files"),
        ({".": 3}, "3 training images, fewer than one batch"),
    ],
)
def test_empty_or_too_small_folders_are_refused(tmp_path: Path, layout: dict, message: str) -> None:
    (tmp_path / "pics").mkdir()
    write_folder(tmp_path / "pics", layout)
    dm = ImageDataModule(name="image_folder", path=str(tmp_path / "pics"), image_size=8, batch_size=64)
    with pytest.raises(DataError, match=message):
        dm.setup()


def test_an_array_keeps_its_images_and_labels(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=images, y=np.arange(50) % 4)
    dm = ImageDataModule(name="array", path=str(tmp_path / "data.npz"), batch_size=8, test_fraction=0.2)
    assert dm.image_shape == (3, 12, 12)  # from the file, before any setup
    dm.setup()
    assert sizes(dm) == [35, 5, 10]
    every = torch.cat([dm.splits[s][0] for s in ("train", "val", "test")])
    assert sorted(every.flatten(1).sum(1).tolist()) == sorted(
        torch.from_numpy(images).permute(0, 3, 1, 2).flatten(1).sum(1).tolist()
    )


def test_the_second_setup_is_a_cache_hit_and_a_changed_file_rebuilds(
    tmp_path: Path, own_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_folder(tmp_path / "pics", {".": 10})
    kwargs = {"name": "image_folder", "path": str(tmp_path / "pics"), "image_size": 8, "batch_size": 2}
    ImageDataModule(**kwargs).setup()
    cached = list(own_cache.glob("image_folder-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    ImageDataModule(**kwargs).setup()
    assert cached[0].stat().st_mtime_ns == stamp  # read, not written again
    one = tmp_path / "pics" / "3.jpg"
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(one)
    os.utime(one, ns=(stamp + 10**9, stamp + 10**9))
    with caplog.at_level(logging.INFO, logger="aevae.data.cache"):
        dm = ImageDataModule(**kwargs)
        dm.setup()
    assert "is stale" in caplog.text and len(list(own_cache.glob("image_folder-*.pt"))) == 1
    assert any(int(x.max()) == 0 for x in torch.cat([dm.splits[s][0] for s in ("train", "val", "test")]))


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"the real photos are not at {PHOTOS}")
def test_a_folder_of_real_photo_crops_trains_evaluates_and_samples_in_colour(tmp_path: Path) -> None:
    """The real commands on crops of real photos: a conv VAE with the logistic likelihood at 32x32,
    its test bits/dim, RGB images in TensorBoard, then aevae-eval and aevae-sample on the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    photo_crops(tmp_path / "crops", 320)
    broken = tmp_path / "crops" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a JPEG")
    run_dir = tmp_path / "run"
    aevae_train(
        "data=image_folder",
        f"data.path={tmp_path / 'crops'}",
        "data.image_size=32",
        "data.batch_size=32",
        "model=vae",
        "model/net=conv",
        "loss=logistic",
        "data.on_bad_file=skip",
        "trainer.max_epochs=2",
        "callbacks.projector.num_points=50",
        *QUIET,
        f"hydra.run.dir={run_dir}",
    )
    assert (run_dir / "skipped_files.txt").read_text() == f"{broken}\n"
    metrics = read_metrics(run_dir)
    assert metrics["test/bits_per_dim"] == pytest.approx(
        metrics["test/neg_elbo"] / (3072 * math.log(2)), rel=1e-5
    )
    assert (
        0 < metrics["test/bits_per_dim"] < 9
    )  # below 8 bits of a uniform model soon; a random net is near 8
    logged = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    reconstructions = logged.Images("media/reconstructions")
    assert reconstructions and Image.open(io.BytesIO(reconstructions[-1].encoded_image_string)).mode == "RGB"
    proc = run(
        *command("eval"),
        f"run_dir={run_dir}",
        "eval.iw_samples=20",
        "eval.num_samples=200",
        "eval.judge_epochs=1",
        "eval.interpolation_pairs=10",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "eval.json").read_text())["metrics"]
    assert report["likelihood/iw_nll"] <= report["likelihood/neg_elbo"]
    assert report["likelihood/iw_nll_bits_per_dim"] == pytest.approx(
        report["likelihood/iw_nll"] / (3072 * math.log(2))
    )
    assert report["samples/fd_judge"] > 0
    proc = run(*command("sample"), f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(run_dir / "samples" / "prior_samples.png").mode == "RGB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="streaming from pinned host memory needs a GPU")
def test_a_split_over_the_device_budget_streams_the_same_batches(tmp_path: Path, monkeypatch) -> None:
    from aevae.data import TensorBatches
    from aevae.data.batches import shuffled

    cuda = torch.device("cuda")
    monkeypatch.setattr(ImageDataModule, "device", property(lambda self: cuda))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (300, 3, 8, 8), dtype=np.uint8))
    delivered = []
    for budget in (None, 0.0):  # resident on the GPU; then over a zero budget: streamed from the host
        dm = ImageDataModule(
            name="array", path=str(tmp_path / "x.npy"), batch_size=16, device_memory_gb=budget
        )
        dm.setup()
        images, labels = dm._on_device("train")
        assert images.is_cuda == (budget is None) and images.is_pinned() == (budget is not None)
        batches = TensorBatches(images, labels, 16, shuffled(len(images), 0), steps_per_chunk=4, device=cuda)
        chunks = list(batches)
        assert all(bx.is_cuda and by.is_cuda for chunk in chunks for bx, by in chunk)
        delivered.append(torch.cat([bx for chunk in chunks for bx, _ in chunk]).cpu())
    assert torch.equal(*delivered)
