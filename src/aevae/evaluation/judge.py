"""Digit-likeness of generated images, scored by a classifier trained once per data set and cached.

A proxy, not FID: it asks only whether a classifier trained on real images
sees a confident member of some class in a sample (`digit_likeness`, the mean
top-class probability) and whether the samples cover the classes
(`inception_score`, exp E[KL(p(y|x) || p(y))], between 1 and the number of
classes). Blurry blends of two digits and off-manifold scribbles score low on
the first; a generator stuck on a few digits scores low on the second.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from aevae.config import UserError, cache_dir
from aevae.models import Classifier, load_checkpoint, resolve_checkpoint

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time (evaluations run side by side train the judge once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def digit_judge(data_name: str, data_root: str, epochs: int, device: torch.device) -> tuple[Classifier, Path]:
    """The cached judge of `data_name` (trained with `experiment=digit_judge` for `epochs` on
    first use), and its run dir (its metrics.json holds its test accuracy)."""
    run_dir = cache_dir() / "judge" / f"{data_name}-{epochs}epochs"
    with _locked(run_dir.with_suffix(".lock")):
        if (run_dir / "metrics.json").is_file():
            try:
                return _load(run_dir, device), run_dir
            except RuntimeError as err:  # cached by an older aevae whose Classifier was different
                log.warning("retraining the cached digit judge in %s: %s", run_dir, str(err).splitlines()[0])
                shutil.rmtree(run_dir)
        _train(run_dir, data_name, data_root, epochs)
        return _load(run_dir, device), run_dir


def _load(run_dir: Path, device: torch.device) -> Classifier:
    return load_checkpoint(resolve_checkpoint(run_dir), map_location=device, expect=Classifier)


def _train(run_dir: Path, data_name: str, data_root: str, epochs: int) -> None:
    command = [
        sys.executable,
        "-m",
        "aevae.train",
        "experiment=digit_judge",
        f"data.name={data_name}",
        f"data.root={data_root}",
        f"trainer.max_epochs={epochs}",
        "callbacks.progress_bar.refresh_rate=0",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("aevae-train: error: ")]
        if errors:
            raise UserError(f"training the digit judge: {errors[-1].split(': error: ', 1)[1]}")
        raise RuntimeError(f"training the digit judge in {run_dir} failed:\n{proc.stderr[-3000:]}")


def judge_scores(judge: Classifier, images: Tensor, batch_size: int = 1000) -> dict[str, float]:
    """`digit_likeness` and `inception_score` of `images` (see the module's docstring)."""
    probs = torch.cat([judge(x).softmax(1) for x in images.split(batch_size)])
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
    return {"digit_likeness": probs.max(1).values.mean().item(), "inception_score": kl.mean().exp().item()}
