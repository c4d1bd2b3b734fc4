"""`aevae-train` end to end: real runs on real MNIST through the console script."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aevae.data import MNISTDataModule
from aevae.models import AE, VAE, load_checkpoint
from conftest import REPO, aevae_train, mnist_root, read_metrics

AE_KEYS = {"test/loss", "test/mse", "test/bce", "test/active_units", "val/loss"}
VAE_KEYS = AE_KEYS | {"test/recon", "test/kl", "test/neg_elbo", "test/bits_per_dim"}


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_run_dir_holds_everything(trained: dict[str, Path], model: str) -> None:
    run = trained[model]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["_target_"].endswith(model.upper()) and config["latent_dim"] == 32
    assert "${" not in (run / "config.yaml").read_text()  # resolved
    assert (run / ".hydra" / "overrides.yaml").is_file() and (run / "train.log").stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("epoch") for n in ckpts)
    metrics = read_metrics(run)
    assert set(metrics) == (VAE_KEYS if model == "vae" else AE_KEYS)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0 < metrics["test/mse"] < 0.1 and 0 < metrics["test/bce"] < 784 * math.log(2)
    assert 0 <= metrics["test/active_units"] <= 32
    if model == "vae":
        assert metrics["test/kl"] > 0
        assert metrics["test/neg_elbo"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-5)
        assert metrics["test/loss"] == pytest.approx(metrics["test/neg_elbo"], rel=1e-5)  # beta = 1
    else:
        assert metrics["test/loss"] == pytest.approx(metrics["test/bce"], rel=1e-5)  # loss=bce


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_metrics_match_the_best_checkpoint(trained: dict[str, Path], model: str) -> None:
    """Re-evaluate the saved best checkpoint by hand: metrics.json must agree."""
    run = trained[model]
    best = next(p for p in (run / "checkpoints").glob("epoch*.ckpt"))
    net = load_checkpoint(best)
    assert isinstance(net, VAE if model == "vae" else AE)
    dm = MNISTDataModule(root=str(mnist_root()), download=False)
    dm.setup()
    squared, pixels = 0.0, 0
    with torch.no_grad():
        for x, _ in dm.test_dataloader():
            squared += (net(x) - x).square().sum().item()
            pixels += x.numel()
    assert read_metrics(run)["test/mse"] == pytest.approx(squared / pixels, rel=1e-4)


def test_training_logged_decreasing_losses(trained: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["vae"] / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/kl", "train/recon", "val/loss", "val/neg_elbo", "train/loss_epoch"} <= tags
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(steps) and len(steps) >= 4  # every log_every_n_steps=10 of 80 steps
    val = [e.value for e in events.Scalars("val/loss")]
    assert len(val) == 2 and val[1] < val[0]
    assert read_metrics(trained["vae"])["val/loss"] == pytest.approx(min(val), rel=1e-6)  # the best epoch's


def test_runs_from_any_directory_with_csv_logger(tmp_path: Path) -> None:
    proc = aevae_train("trainer=debug", "logger=csv", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and list((run / "csv").glob("metrics.csv")), proc.stdout[-2000:]
    assert not (REPO / "run").exists()


def test_runs_without_logger_or_callbacks(tmp_path: Path) -> None:
    aevae_train("trainer=debug", "logger=none", "callbacks=none", f"hydra.run.dir={tmp_path}")
    assert set(read_metrics(tmp_path)) == AE_KEYS
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["model=vae", "loss=mse"], "loss=mse is not a likelihood"),
        (["data.root=/nonexistent", "data.download=false"], "MNIST not found in /nonexistent/MNIST/raw"),
        (["model.latent_activation=swish"], "model.latent_activation='swish' is not allowed"),
    ],
)
def test_user_mistakes_get_one_line(overrides: list[str], expected: str, tmp_path: Path) -> None:
    proc = aevae_train(*overrides, f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aevae-train: error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_installed_console_script_finds_its_config() -> None:
    exe = Path(sys.executable).with_name("aevae-train")
    proc = subprocess.run(
        [str(exe), "--cfg", "job", "--resolve", "model=vae"],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "AEVAE_DATA": "/data"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    job = yaml.safe_load(proc.stdout)
    assert job["model"]["_target_"] == "aevae.models.VAE" and job["data"]["root"] == "/data"


@pytest.fixture(scope="module")
def acceptance_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The issue's acceptance runs on full MNIST (default seed), run side by side."""
    base = tmp_path_factory.mktemp("acceptance")
    env = {**os.environ, "AEVAE_DATA": str(mnist_root()), "OMP_NUM_THREADS": "1"}  # one core each
    exe = str(Path(sys.executable).with_name("aevae-train"))
    jobs = {
        "ae": ["model=ae", "trainer.max_epochs=1"],
        "vae": ["model=vae", "trainer.max_epochs=3"],
    }
    procs = {
        name: subprocess.Popen(
            [
                exe,
                *args,
                "logger=none",
                "callbacks.progress_bar.refresh_rate=0",
                f"hydra.run.dir={base / name}",
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in jobs.items()
    }
    for proc in procs.values():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-4000:]
    return {name: base / name for name in jobs}


def test_ae_one_epoch_quality(acceptance_runs: dict[str, Path]) -> None:
    assert read_metrics(acceptance_runs["ae"])["test/mse"] <= 0.020


def test_vae_three_epochs_is_not_collapsed(acceptance_runs: dict[str, Path]) -> None:
    metrics = read_metrics(acceptance_runs["vae"])
    assert metrics["test/active_units"] >= 10 and metrics["test/mse"] <= 0.030
