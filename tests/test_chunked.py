"""The chunked fast path: K optimizer steps per training_step mean exactly K plain steps."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from aevae.commands.train import build
from aevae.config import UserError, compose_config
from aevae.data import MNISTDataModule
from aevae.engine.chunked import choose_steps_per_chunk, configure_chunks
from conftest import QUIET, SMALL_DATA, mnist_root

SMALL = (*SMALL_DATA, "test=false")


def fit(tmp: Path, *overrides: str):  # -> aevae.commands.train.Run
    quiet = () if "callbacks=none" in overrides else QUIET
    cfg = compose_config([f"data.root={mnist_root()}", *SMALL, *quiet, *overrides], output_dir=tmp)
    run = build(cfg)
    run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=cfg.get("ckpt_path"))
    return run


def read_csv_metrics(run_dir: Path) -> list[dict[str, str]]:
    """Every logged row, without the wall-clock `perf/` columns."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in csv.DictReader(f)]


def test_chunks_train_exactly_like_plain_steps(tmp_path: Path) -> None:
    """Same parameters, same logged metrics at the same steps, same validations and
    step-interval checkpoints, and max_steps met exactly, across epoch boundaries."""
    common = (
        "logger=csv",
        "model=vae",
        "trainer.max_steps=50",  # halfway through the third epoch
        "trainer.log_every_n_steps=10",
        "trainer.val_check_interval=10",
        "trainer.check_val_every_n_epoch=null",
        "callbacks.model_checkpoint.every_n_train_steps=20",
        "callbacks.model_checkpoint.filename='step{step:03d}'",
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.monitor=null",
    )
    plain = fit(tmp_path / "plain", *common, "steps_per_chunk=1")
    chunked = fit(tmp_path / "chunked", *common)
    assert chunked.datamodule.steps_per_chunk == 10 and plain.datamodule.steps_per_chunk == 1
    for run in (plain, chunked):
        assert run.trainer.global_step == 50
        adam_steps = {int(s["step"]) for s in run.model.optimizers().optimizer.state.values()}
        assert adam_steps == {50}

    for p, c in zip(plain.model.parameters(), chunked.model.parameters(), strict=True):
        torch.testing.assert_close(c, p, rtol=0, atol=0)
    rows = [read_csv_metrics(tmp_path / name) for name in ("plain", "chunked")]
    assert rows[0] == rows[1]  # every logged value at every step, validations included
    train_steps = [int(r["step"]) for r in rows[1] if r.get("train/loss")]
    val_steps = [int(r["step"]) for r in rows[1] if r.get("val/loss")]
    assert train_steps == [9, 19, 29, 39, 49] and val_steps == [9, 19, 29, 39, 49]
    ckpts = [
        sorted(p.name for p in (tmp_path / name / "checkpoints").glob("step*.ckpt"))
        for name in rows and ("plain", "chunked")
    ]
    assert ckpts[0] == ckpts[1] and {"step020.ckpt", "step040.ckpt"} <= set(ckpts[1])


def test_chunks_match_a_hand_written_loop(tmp_path: Path) -> None:
    chunked = fit(
        tmp_path, "logger=none", "callbacks=none", "trainer.max_epochs=2", "trainer.limit_val_batches=0"
    )
    assert chunked.datamodule.steps_per_chunk == 20 and chunked.trainer.global_step == 40

    cfg = compose_config([f"data.root={mnist_root()}", *SMALL], output_dir=tmp_path)
    L.seed_everything(cfg.seed)
    model = instantiate(cfg.model, _convert_="all")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    optimizer = model.configure_optimizers()
    batches = datamodule.train_dataloader()
    for epoch in range(2):
        batches.sampler.set_epoch(epoch)
        for x, _ in batches:
            loss = model.terms(x)["loss"].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for p, c in zip(model.parameters(), chunked.model.parameters(), strict=True):
        torch.testing.assert_close(c, p, rtol=0, atol=0)


def test_gradient_clipping_bounds_each_update(tmp_path: Path) -> None:
    overrides = (
        "logger=none",
        "callbacks=none",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        "model.optimizer._target_=torch.optim.SGD",
        "model.lr=1.0",
    )
    cfg = compose_config([f"data.root={mnist_root()}", *SMALL, *overrides], output_dir=tmp_path)
    L.seed_everything(cfg.seed)
    before = torch.cat([p.detach().flatten() for p in instantiate(cfg.model, _convert_="all").parameters()])
    clipped = fit(tmp_path, *overrides, "trainer.gradient_clip_val=0.01")
    after = torch.cat([p.detach().flatten() for p in clipped.model.parameters()])
    assert (after - before).norm() == pytest.approx(0.01, rel=1e-3)  # lr 1 x gradient norm clipped to 0.01


@pytest.mark.parametrize(
    "intervals,batch,expected",
    [
        ({"log": 20, "epoch": 860}, 64, 20),  # the defaults on MNIST
        ({"log": 50, "epoch": 860}, 64, 10),
        ({"log": 20, "epoch": 860, "max_steps": 1000}, 64, 20),
        ({"log": 20, "epoch": 860, "max_steps": 30}, 64, 10),
        ({"log": 20, "epoch": 859}, 64, 1),  # drop_last on MNIST: a prime number of batches
        ({"log": 20, "epoch": 430}, 1024, 10),  # at most 16,384 images per chunk
        ({"log": 0, "max_steps": -1}, 64, 64),
    ],
)
def test_auto_chunk_divides_every_interval(intervals: dict, batch: int, expected: int) -> None:
    assert choose_steps_per_chunk("auto", intervals, batch) == expected


@pytest.mark.parametrize(
    "requested,message",
    [
        (3, "steps_per_chunk=3 must divide log=20"),
        (0, "steps_per_chunk=0 must be a positive integer"),
        ("many", "steps_per_chunk='many' must be a positive integer"),
    ],
)
def test_explicit_chunk_must_divide_every_interval(requested, message: str) -> None:
    with pytest.raises(UserError, match=message):
        choose_steps_per_chunk(requested, {"log": 20, "epoch": 860}, 64)


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, logger=False, accelerator="cpu", **kwargs)


def test_configure_counts_batch_arguments_in_chunks(tmp_path: Path) -> None:
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False)
    trainer = _trainer(tmp_path, log_every_n_steps=10, limit_train_batches=40, val_check_interval=20)
    assert configure_chunks(trainer, datamodule, "auto") == 10
    assert (trainer.limit_train_batches, trainer.val_check_interval) == (4, 2)
    assert datamodule.steps_per_chunk == 10
    # without a batch limit the epoch (860 batches) must be whole chunks too
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False, batch_size=100)  # 550 batches
    assert configure_chunks(_trainer(tmp_path, log_every_n_steps=20), datamodule, "auto") == 10
    two_ranks = MNISTDataModule(root=str(mnist_root()), download=False, train_size=1280)
    assert two_ranks.train_batches_per_epoch(world_size=2) == 10


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"accumulate_grad_batches": 4}, "accumulate_grad_batches"),
        ({"precision": "bf16-mixed", "log_every_n_steps": 7}, None),
    ],
)
def test_configure_refuses_what_it_cannot_honour(tmp_path: Path, kwargs: dict, message: str | None) -> None:
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False)
    trainer = _trainer(tmp_path, **kwargs)
    if message is None:  # bf16 autocast needs no loss scaling: accepted
        assert configure_chunks(trainer, datamodule, "auto") == 1  # gcd(7, 860) = 1
        return
    with pytest.raises(UserError, match=message):
        configure_chunks(trainer, datamodule, "auto")


def test_resume_from_an_epoch_checkpoint_continues_exactly(tmp_path: Path) -> None:
    """2 epochs, then resume to 3, equals 3 epochs straight (the AE is deterministic on CPU)."""
    common = ("logger=none", "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null")
    straight = fit(tmp_path / "straight", *common, "trainer.max_epochs=3")
    fit(tmp_path / "first", *common, "trainer.max_epochs=2")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = fit(tmp_path / "first", *common, "trainer.max_epochs=3", f"ckpt_path={last}")
    assert resumed.trainer.global_step == straight.trainer.global_step == 60
    for r, s in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        torch.testing.assert_close(r, s, rtol=0, atol=0)
