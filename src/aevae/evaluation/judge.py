"""Sample quality scored by a judge: a classifier trained once per data set and image size, cached.

A proxy, not FID: it asks only whether a classifier trained on real images
sees a confident member of some class in a sample (`digit_likeness`, the mean
top-class probability) and whether the samples cover the classes
(`inception_score`, exp E[KL(p(y|x) || p(y))], between 1 and the number of
classes). Blurry blends of two digits and off-manifold scribbles score low on
the first; a generator stuck on a few digits scores low on the second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError, cache_dir, quote_paths
from aevae.data.cache import locked
from aevae.data.shapes import MNIST_FAMILY, image_shape, num_classes
from aevae.models import Classifier, load_checkpoint, resolve_checkpoint

log = logging.getLogger(__name__)


def judge_dir(data: dict[str, Any], epochs: int) -> Path:
    """Where the judge of these data is cached: one per data set, image size and training length
    (an image folder's or an array's by its path too)."""
    name = data.get("name", "mnist")
    if name in MNIST_FAMILY:  # the name judges of these have always had
        return cache_dir() / "judge" / f"{name}-{epochs}epochs"
    identity = {key: data.get(key) for key in JUDGE_KEYS}
    identity["path"] = str(Path(str(identity["path"])).expanduser().resolve()) if identity["path"] else None
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    shape = "x".join(
        map(str, image_shape(name, data.get("image_size"), data.get("channels"), data.get("path")))
    )
    return cache_dir() / "judge" / f"{name}-{shape}-{digest}-{epochs}epochs"


#: The data settings a judge is trained for: the same images, seen the same way.
JUDGE_KEYS = (
    "name",
    "root",
    "path",
    "image_size",
    "channels",
    "split_seed",
    "val_size",
    "val_fraction",
    "test_fraction",
    "on_bad_file",
)


def digit_judge(data: dict[str, Any], epochs: int, device: torch.device) -> tuple[Classifier, Path]:
    """The cached judge of the data a model was trained on (`data`: its data config), trained
    with `experiment=digit_judge` for `epochs` on first use, and its run dir (its metrics.json
    holds its test accuracy). Unlabelled data have no judge: a UserError says so."""
    if num_classes(data) < 2:
        raise UserError(f"data={data.get('name')} has no class labels to train a judge on")
    run_dir = judge_dir(data, epochs)
    with locked(run_dir.with_suffix(".lock")):  # evaluations side by side train the judge once
        if (run_dir / "metrics.json").is_file():
            try:
                return _load(run_dir, device), run_dir
            except RuntimeError as err:  # cached by an older aevae whose Classifier was different
                log.warning("retraining the cached digit judge in %s: %s", run_dir, str(err).splitlines()[0])
                shutil.rmtree(run_dir)
        _train(run_dir, data, epochs)
        return _load(run_dir, device), run_dir


def _load(run_dir: Path, device: torch.device) -> Classifier:
    return load_checkpoint(resolve_checkpoint(run_dir), map_location=device, expect=Classifier)


def _train(run_dir: Path, data: dict[str, Any], epochs: int) -> None:
    settings = [f"data.{key}={data[key]}" for key in JUDGE_KEYS[1:] if data.get(key) is not None]
    command = [
        sys.executable,
        "-m",
        "aevae.commands.train",
        "experiment=digit_judge",
        f"data={data.get('name', 'mnist')}",
        *quote_paths(settings),
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


def conditional_accuracy(judge: Classifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """The fraction of `images`, drawn by a conditional model for `labels`, that the judge
    classifies as their label: does the model draw the class it is asked for."""
    hits = sum(
        (judge(x).argmax(1) == y).sum().item()
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    return hits / len(images)
