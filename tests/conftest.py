"""Shared fixtures: the real MNIST copy, synthetic IDX files, and runs trained once per session."""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aevae.data.embedded import embedded_root, has_mnist

REPO = Path(__file__).resolve().parents[1]


def mnist_root() -> Path:
    """Folder holding MNIST/raw/: $AEVAE_DATA, else the checkout's ../shared/data, else the copy
    shipped with aevae (unpacked into $AEVAE_CACHE or ~/.cache/aevae), as on a fresh clone."""
    root = Path(os.environ.get("AEVAE_DATA") or REPO.parent / "shared" / "data").resolve()
    if not os.environ.get("AEVAE_DATA") and not has_mnist(root):
        root = embedded_root()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"the tests need MNIST's IDX files under {root}/MNIST/raw (set AEVAE_DATA)")
    return root


@pytest.fixture(scope="session")
def mnist() -> Path:
    return mnist_root()


def write_idx(folder: Path, n_train: int, n_test: int, seed: int = 0, gz: bool = False) -> None:
    """Four small IDX files in the official format (magic, dims, uint8 payload)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        files = {
            f"{split}-images-idx3-ubyte": struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes(),
            f"{split}-labels-idx1-ubyte": struct.pack(">II", 0x0801, n) + labels.tobytes(),
        }
        for name, payload in files.items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)


#: The installed console script, run as a user would run it.
EXE = str(Path(sys.executable).with_name("aevae-train"))


def command(name: str) -> tuple[str, ...]:
    """An installed console script (`aevae-eval` is `command("eval")`), run as a user would run it."""
    return (str(Path(sys.executable).with_name(f"aevae-{name}")),)


#: 1,280 training images (20 batches of 64 per epoch), 500 for validation.
SMALL_DATA = ("data.train_size=1280", "data.val_size=500", "data.eval_batch_size=250")
QUIET = ("callbacks.progress_bar.refresh_rate=0",)
#: Small but real: 2 epochs of 40 batches on real MNIST, the full 10k test set.
QUICK = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=40",
    "data.val_size=2000",
    "trainer.log_every_n_steps=10",
    *QUIET,
)


def run_env() -> dict[str, str]:
    """Real data, one thread per process (tests run several side by side on 2 cores)."""
    return {**os.environ, "AEVAE_DATA": str(mnist_root()), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def run(*cmd: str, cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(cmd), cwd=cwd or REPO, env=run_env(), capture_output=True, text=True, timeout=timeout
    )


def start(*cmd: str) -> subprocess.Popen:
    """Start a command in the background; its output is kept for the failure message."""
    return subprocess.Popen(
        list(cmd), cwd=REPO, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, what: str) -> None:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{what} failed:\n{out[-5000:]}"


def aevae_train(*overrides: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `aevae-train` entry point in a subprocess."""
    proc = run(EXE, *overrides, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"aevae-train {' '.join(overrides)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digit judge of aevae-eval is trained into a cache of the test session, not ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["AEVAE_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One short real `aevae-train` run per model, shared by every test that reads a run dir."""
    base = tmp_path_factory.mktemp("runs")
    procs = {
        model: start(EXE, f"model={model}", *QUICK, f"hydra.run.dir={base / model}")
        for model in ("ae", "vae")
    }
    for model, proc in procs.items():
        finish(proc, f"the {model} run")
    return {model: base / model for model in procs}


def png_size(image: Path | bytes) -> tuple[int, int]:
    """(width, height) of a PNG file or of its bytes, read from its header."""
    data = image if isinstance(image, bytes) else image.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{image if isinstance(image, Path) else 'data'} is not a PNG"
    return struct.unpack(">II", data[16:24])


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def readme_code(heading: str, language: str = "python") -> list[str]:
    """The `language` code blocks of README.md's section `heading` (a `## ` line), in order."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


# Under pytest-xdist (`-n 2 --dist loadfile`, the README's test command: a test file on one worker,
# so its module fixtures are made once) two workers share two cores: one thread each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
