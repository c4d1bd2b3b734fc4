"""The in-process short fit + test and checkpoint round trip that each model's test file runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from aevae.commands.train import build
from aevae.config import compose_config, user_error
from aevae.models import load_checkpoint
from conftest import QUIET, SMALL_DATA, mnist_root


def fit_and_test(tmp_path: Path, *overrides: str) -> tuple[Any, dict[str, float]]:
    """Two optimizer steps on a little real MNIST, one val and one test batch: the run and its
    test metrics, asserted finite."""
    base = [
        f"data.root={mnist_root()}",
        *SMALL_DATA,
        *QUIET,
        "logger=none",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "model.hidden_dims=[32]",
    ]
    run = build(compose_config([*base, *overrides], output_dir=tmp_path))
    run.trainer.fit(run.model, datamodule=run.datamodule)
    (metrics,) = run.trainer.test(run.model, datamodule=run.datamodule, verbose=False)
    assert run.trainer.global_step == 2 and all(math.isfinite(v) for v in metrics.values()), metrics
    return run, metrics


def assert_round_trip(run: Any, tmp_path: Path) -> Any:
    """The run's last checkpoint loads into a model with the same codes and decodings; returns it."""
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert type(loaded) is type(run.model)
    x = torch.rand(4, *run.model.image_shape)
    trained = run.model.eval().cpu()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), trained.encode(x))
        torch.testing.assert_close(loaded(x), trained(x))
    return loaded


def refusal(tmp_path: Path, *overrides: str) -> str:
    """The one line with which building the run of `overrides` is refused."""
    cfg = compose_config([f"data.root={mnist_root()}", *overrides], output_dir=tmp_path)
    try:
        build(cfg)
    except Exception as err:  # noqa: BLE001  (Hydra wraps the model's UserError in its own)
        message = user_error(err)
        assert message is not None, f"{overrides} failed without a UserError: {err!r}"
        return message
    raise AssertionError(f"{overrides} was not refused")
