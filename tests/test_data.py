"""The MNIST DataModule and its tensor-resident batches."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from aevae.data import DataError, MNISTDataModule, TensorBatches, embedded
from aevae.data.batches import shuffled
from conftest import EXE, REPO, SMALL_DATA, write_idx

FASHION_DEB = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def real(mnist: Path) -> MNISTDataModule:
    dm = MNISTDataModule(root=str(mnist), download=False)
    dm.setup()
    return dm


def test_real_mnist_splits_shapes_and_ranges(real: MNISTDataModule) -> None:
    sizes = {name: len(images) for name, (images, _) in real.splits.items()}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    for images, labels in real.splits.values():
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        assert labels.dtype == torch.int64 and set(labels.unique().tolist()) == set(range(10))
    x, y = next(iter(real.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (64,)
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9  # pixels in [0, 1], not [0, 255]
    xt, _ = next(iter(real.test_dataloader()))
    assert xt.shape == (1000, 1, 28, 28)
    assert torch.equal(xt, real.splits["test"][0][:1000].float() / 255)  # exact conversion, in order


def test_split_is_seeded_and_disjoint(mnist: Path, real: MNISTDataModule) -> None:
    again = MNISTDataModule(root=str(mnist), download=False)
    again.setup()
    assert torch.equal(again.splits["val"][0], real.splits["val"][0])
    other = MNISTDataModule(root=str(mnist), download=False, split_seed=1)
    other.setup()
    assert not torch.equal(other.splits["val"][0], real.splits["val"][0])
    # train and val are disjoint and together the full 60k set
    train = real.splits["train"][0].flatten(1)
    val = real.splits["val"][0].flatten(1)
    both = torch.cat([train, val])
    assert len(both) == 60_000
    distinct = {row.numpy().tobytes() for row in both}
    assert len(distinct) >= 60_000 - 10  # MNIST may hold a few exact duplicates, not more


def test_epoch_order_is_seeded_reshuffled_and_complete() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    labels = torch.arange(100)

    def epoch(seed: int, e: int) -> torch.Tensor:
        batches = TensorBatches(images, labels, 16, sampler=shuffled(100, seed))
        batches.sampler.set_epoch(e)
        return torch.cat([y for _, y in batches])

    assert len(TensorBatches(images, labels, 16, sampler=shuffled(100, 0))) == 7
    first = epoch(0, 0)
    assert sorted(first.tolist()) == list(range(100))  # every image once, last batch partial
    assert torch.equal(first, epoch(0, 0))  # reproducible
    assert not torch.equal(first, epoch(0, 1))  # reshuffled each epoch
    assert not torch.equal(first, epoch(1, 0))  # and by seed
    dropped = TensorBatches(images, labels, 16, sampler=shuffled(100, 0), drop_last=True)
    assert len(dropped) == 6 and all(len(y) == 16 for _, y in dropped)


def test_ranks_get_disjoint_shards_covering_the_epoch() -> None:
    images = torch.zeros(10, 1, 1, 1, dtype=torch.uint8)
    shards = [
        torch.cat([y for _, y in TensorBatches(images, torch.arange(10), 2, sampler=shuffled(10, 3, 2, r))])
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


def test_lightning_sets_the_epoch_through_the_sampler(real: MNISTDataModule) -> None:
    from lightning.fabric.utilities.data import _set_sampler_epoch

    loader = real.train_dataloader()
    _set_sampler_epoch(loader, 3)
    assert loader.sampler.epoch == 3


@pytest.mark.parametrize("name,folder", [("kmnist", "KMNIST"), ("fashion_mnist", "FashionMNIST")])
def test_other_datasets_read_from_synthetic_idx(tmp_path: Path, name: str, folder: str) -> None:
    write_idx(tmp_path / folder / "raw", n_train=120, n_test=30)
    dm = MNISTDataModule(name=name, root=str(tmp_path), download=False, val_size=20, batch_size=32)
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [100, 20, 30]
    assert sum(len(y) for _, y in dm.train_dataloader()) == 100


def test_missing_data_says_where_and_how(tmp_path: Path) -> None:
    dm = MNISTDataModule(name="fashion_mnist", root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as err:
        dm.setup()
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "FashionMNIST" / "raw") in message
    assert "data.download=true" in message and "AEVAE_DATA" in message


def test_a_failed_download_says_why_and_how_to_do_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens on port 9
    with pytest.raises(DataError) as err:
        MNISTDataModule(name="fashion_mnist", root=str(tmp_path), download=True).prepare_data()
    message = str(err.value)
    assert message.startswith("could not download FashionMNIST (urlopen error") and "\n" not in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "AEVAE_DATA" in message


def test_gz_archives_are_unpacked_offline(tmp_path: Path) -> None:
    write_idx(tmp_path / "MNIST" / "raw", n_train=10, n_test=4, gz=True)
    dm = MNISTDataModule(root=str(tmp_path), download=False, val_size=2)
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [8, 2, 4]


def test_archives_that_cannot_be_unpacked_are_explained(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, n_train=10, n_test=4, gz=True)
    (raw / "train-images-idx3-ubyte.partial").mkdir()  # unwritable target, even for root
    with pytest.raises(DataError, match="cannot unpack .*train-images-idx3-ubyte.gz.*writable"):
        MNISTDataModule(root=str(tmp_path), download=False).setup()
    assert not (raw / "train-images-idx3-ubyte").exists()


def test_unknown_dataset_name_is_refused() -> None:
    with pytest.raises(DataError, match="cifar.*fashion_mnist"):
        MNISTDataModule(name="cifar")


def test_split_sizes_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "MNIST" / "raw", n_train=50, n_test=10)
    with pytest.raises(DataError, match="val_size"):
        MNISTDataModule(root=str(tmp_path), download=False, val_size=60).setup()


def test_root_defaults_to_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AEVAE_DATA", str(tmp_path))
    assert MNISTDataModule(name="kmnist").root == tmp_path
    monkeypatch.delenv("AEVAE_DATA")
    assert MNISTDataModule(name="kmnist").root == Path("data")


@pytest.mark.skipif(not FASHION_DEB.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_archives(tmp_path: Path) -> None:
    """Debian's recompressed archives, as installed, unpack and read without network."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in FASHION_DEB.glob("*.gz"):
        shutil.copy(gz, raw / gz.name)
    dm = MNISTDataModule(name="fashion_mnist", root=str(tmp_path), download=False)
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [55_000, 5_000, 10_000]


def test_a_root_without_mnist_falls_back_to_the_shipped_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVAE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    dm = MNISTDataModule(root=str(tmp_path / "empty"), download=True, val_size=5000)
    assert dm.root == tmp_path / "cache" / "data"
    raw = dm.root / "MNIST" / "raw"
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in raw.iterdir()} == embedded.MD5
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    assert not list((tmp_path / "empty").iterdir())  # nothing was downloaded there
    with pytest.raises(DataError, match="not found in"):  # a folder that is not there: a typo?
        MNISTDataModule(root=str(tmp_path / "typo"), download=False).setup()


def test_a_damaged_shipped_copy_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archives = tmp_path / "archives"
    shutil.copytree(embedded.ARCHIVES, archives)
    (archives / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not MNIST"))
    monkeypatch.setattr(embedded, "ARCHIVES", archives)
    monkeypatch.setenv("AEVAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        MNISTDataModule(root=str(tmp_path))
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz unpacks to md5" in message and "reinstall" in message
    assert "\n" not in message
    assert not list((tmp_path / "cache" / "data" / "MNIST" / "raw").glob("t10k-labels*"))  # no bad file left


def test_a_fresh_clone_trains_offline_on_the_shipped_mnist(tmp_path: Path) -> None:
    """README's first command on a machine with no data, no $AEVAE_DATA and no network, run from
    outside the checkout: MNIST comes from the copy inside the package, no download is tried."""
    env = {k: v for k, v in os.environ.items() if k != "AEVAE_DATA"}
    nowhere = "http://127.0.0.1:9"  # nothing listens on port 9: any download attempt fails
    env |= {"AEVAE_CACHE": str(tmp_path / "cache"), "http_proxy": nowhere, "https_proxy": nowhere}
    env |= {"HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere, "no_proxy": "", "OMP_NUM_THREADS": "1"}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert REPO not in cwd.parents
    args = [*SMALL_DATA, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=none"]
    args += ["callbacks=none", "hydra.run.dir=run"]
    proc = subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (cwd / "run" / "train.log").read_text()
    assert "data holds no MNIST: reading the copy shipped with aevae" in log
    assert "test/mse" in json.loads((cwd / "run" / "metrics.json").read_text())
    assert not (cwd / "data").exists()  # the default data.root: nothing downloaded into it
