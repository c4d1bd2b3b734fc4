"""Evaluation is a function of the weights: seeded noise, training's RNG left alone, own checkpoints."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from aevae.callbacks.tensorboard import ImageCallback, evaluating
from aevae.commands.train import build
from aevae.config import compose_config
from aevae.engine.checkpointing import CHECKPOINT_PATH_KEYS, ModelCheckpoint
from conftest import QUIET, SMALL_DATA, aevae_train, mnist_root, read_metrics


@pytest.mark.parametrize("model", [["model=vae"], ["model=iwae", "model.k=3"]], ids=["vae", "iwae"])
def test_the_same_weights_test_bit_identically_whatever_ran_before(tmp_path: Path, model: list[str]) -> None:
    overrides = [f"data.root={mnist_root()}", *SMALL_DATA, *QUIET, "trainer.max_epochs=1", "logger=none"]
    overrides.append("trainer.limit_test_batches=4")  # 1,000 test images are enough to tell
    run = build(compose_config([*overrides, *model], output_dir=tmp_path))
    run.trainer.fit(run.model, datamodule=run.datamodule)
    best = run.trainer.checkpoint_callback.best_model_path

    def evaluated(stage: str) -> dict[str, float]:
        before = torch.get_rng_state()
        evaluate = run.trainer.test if stage == "test" else run.trainer.validate
        (metrics,) = evaluate(run.model, datamodule=run.datamodule, ckpt_path=best, verbose=False)
        assert torch.equal(torch.get_rng_state(), before), f"{stage} moved training's random stream"
        return metrics

    for stage in ("test", "val"):
        first = evaluated(stage)
        torch.randn(1000)  # unrelated use of the global RNG in between
        assert evaluated(stage) == first  # exact: the noise is the batch's own
        assert first[f"{stage}/neg_elbo"] > first[f"{stage}/recon"]  # it does draw: the terms are real

    images = [c for c in run.trainer.callbacks if isinstance(c, ImageCallback)]
    assert len(images) == 3
    with evaluating(run.model):
        for callback in images:  # the media grids are fixed draws too
            before = torch.get_rng_state()
            grid = callback.render(run.trainer, run.model)
            torch.randn(1000)
            assert torch.equal(callback.render(run.trainer, run.model), grid), callback.name
            torch.set_rng_state(before)


def test_model_checkpoint_state_loads_into_the_dir_it_is_loaded_from(tmp_path: Path) -> None:
    """Lightning's ModelCheckpoint state holds absolute paths; loaded where `dirpath` differs
    (a moved or copied run dir) every one of them moves to the new folder."""
    old, new = (os.path.realpath(tmp_path / name / "checkpoints") for name in ("old", "new"))
    saved = ModelCheckpoint(dirpath=old, monitor="val/loss")
    saved.best_model_path = saved.kth_best_model_path = os.path.join(old, "epoch001.ckpt")
    saved.last_model_path = os.path.join(old, "last.ckpt")
    saved.best_k_models = {saved.best_model_path: torch.tensor(7.0)}
    saved.best_model_score = torch.tensor(7.0)
    state = saved.state_dict()
    # the part of Lightning's format that aevae.engine.checkpointing.rerooted edits
    assert {"dirpath", "best_k_models", *CHECKPOINT_PATH_KEYS} <= set(state) and state["dirpath"] == old

    loaded = ModelCheckpoint(dirpath=new, monitor="val/loss")
    loaded.load_state_dict(state)
    assert loaded.best_model_path == loaded.kth_best_model_path == os.path.join(new, "epoch001.ckpt")
    assert loaded.last_model_path == os.path.join(new, "last.ckpt")
    assert list(loaded.best_k_models) == [os.path.join(new, "epoch001.ckpt")]
    assert loaded.best_model_score == 7.0  # restored in full, not only best_model_path
    # stored under Lightning's own key, so checkpoints of either class load into both
    assert loaded.state_key == LightningModelCheckpoint(dirpath=new, monitor="val/loss").state_key


def test_a_copied_run_dir_resumes_and_tests_its_own_checkpoints(tmp_path: Path) -> None:
    """The copy of a finished run, its original deleted: `resume=` re-tests the copy's best
    checkpoint, and in a fresh process gets bit-identical test metrics."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    aevae_train(
        "model=vae", *SMALL_DATA, *QUIET, "trainer.max_epochs=2", "logger=none", f"hydra.run.dir={original}"
    )
    metrics = read_metrics(original)
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    (copy / "metrics.json").unlink()

    resumed = aevae_train(f"resume={copy}")
    assert read_metrics(copy) == metrics
    tested = re.findall(r"Loaded model weights from the checkpoint at (\S+)", resumed.stdout + resumed.stderr)
    assert tested and Path(tested[-1]).parent == copy / "checkpoints", tested
