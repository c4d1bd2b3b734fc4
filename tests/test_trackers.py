"""MLflow, W&B and CSV beside TensorBoard: one real two-job sweep logging to all four, read back
with each tool's own client (MLflow's tracking API, W&B's `wandb leet inspect` of its offline
run, the CSV logger's files, TensorBoard's event reader)."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aevae.callbacks import trackers
from aevae.config import UserError, compose_config
from conftest import EXE, QUIET, SMALL_DATA, png_size, read_metrics, run
from test_callbacks import GRID_SIZES, grid_size

EPOCHS, STEPS = 2, 20  # SMALL_DATA: 20 optimizer steps per epoch
LOGGERS = "logger=[tensorboard,mlflow,wandb,csv]"
COMMON = {"latent_dim": 32, "loss": "bernoulli", "lr": 1e-3, "batch_size": 64, "data": "mnist", "seed": 42}
#: What `aevae.callbacks.hparams.run_hparams` gives each job (the AE has no beta).
HPARAMS = {"ae": {"model": "ae", **COMMON}, "vae": {"model": "vae", "beta": 1.0, **COMMON}}

pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install -e '.[wandb]'")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`aevae-train -m model=ae,vae` with all four loggers: each job's run dir, and the output."""
    sweep_dir = tmp_path_factory.mktemp("trackers")
    proc = run(
        EXE, "-m", "model=ae,vae", LOGGERS, *SMALL_DATA, *QUIET, f"trainer.max_epochs={EPOCHS}",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {"runs": {"ae": sweep_dir / "0", "vae": sweep_dir / "1"}, "output": proc.stdout + proc.stderr}


def mlflow_run(run_dir: Path):  # -> (MlflowClient, mlflow.entities.Run)
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the store aevae writes by default
    client = MlflowClient(f"file:{run_dir / 'mlruns'}")
    experiment = client.get_experiment_by_name("aevae")
    (found,) = client.search_runs([experiment.experiment_id])  # one run per run dir
    return client, found


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_mlflow_has_params_metrics_and_images(sweep: dict, model: str, tmp_path: Path) -> None:
    run_dir = sweep["runs"][model]
    client, found = mlflow_run(run_dir)
    assert found.info.status == "FINISHED"
    assert found.data.params == {key: str(value) for key, value in HPARAMS[model].items()}
    final = read_metrics(run_dir)
    assert {key: found.data.metrics[key] for key in final} == pytest.approx(final, rel=1e-6)
    assert len(client.get_metric_history(found.info.run_id, "val/loss")) == EPOCHS
    assert "train/loss" in found.data.metrics and "lr-Adam" in found.data.metrics
    images = [a.path for a in client.list_artifacts(found.info.run_id, "images") if a.path.endswith(".png")]
    for tag, size in GRID_SIZES.items():
        name = tag.replace("/", "~")  # MLflow's file name for a key with a '/'
        mine = sorted(p for p in images if p.startswith(f"images/{name}+step+"))
        steps = [int(p.split("+step+")[1].split("+")[0]) for p in mine]
        assert steps == [STEPS * (e + 1) for e in range(EPOCHS)], mine
        local = client.download_artifacts(found.info.run_id, mine[-1], str(tmp_path))
        assert png_size(Path(local)) == grid_size(*size), tag


@functools.cache
def wandb_inspect(run_dir: Path, *flags: str) -> str:
    """W&B's own reader of a run's transaction log (`wandb leet inspect`), as JSON."""
    wandb_exe = str(Path(sys.executable).with_name("wandb"))
    proc = subprocess.run(
        [wandb_exe, "leet", "inspect", "--json", *flags, str(run_dir / "wandb")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_wandb_offline_run_has_config_metrics_and_images(sweep: dict, model: str) -> None:
    run_dir = sweep["runs"][model]
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # one W&B run per job, offline
    summary = json.loads(wandb_inspect(run_dir, "--summary"))
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["project"] == "aevae" and summary["config"] == HPARAMS[model]
    final = read_metrics(run_dir)
    assert {key: summary["summary"][key] for key in final} == pytest.approx(final, rel=1e-6)
    history = [json.loads(line)["history"]["item"] for line in wandb_inspect(run_dir).splitlines()
               if '"type":"history"' in line]  # fmt: skip
    for tag, size in GRID_SIZES.items():
        logged = [item for item in history if f"{tag}.filenames" in item]  # the log flattens media keys
        assert [item["trainer/global_step"] for item in logged] == [STEPS * (e + 1) for e in range(EPOCHS)]
        for item in logged:
            (image,) = item[f"{tag}.filenames"]
            assert png_size(offline / "files" / image) == grid_size(*size), tag


def test_the_jobs_of_a_sweep_get_a_wandb_run_each(sweep: dict) -> None:
    ids = {model: json.loads(wandb_inspect(d, "--summary"))["run_id"] for model, d in sweep["runs"].items()}
    assert len(set(ids.values())) == 2, ids


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_csv_has_hparams_and_final_metrics(sweep: dict, model: str) -> None:
    run_dir = sweep["runs"][model]
    assert yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text()) == HPARAMS[model]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    final = read_metrics(run_dir)
    test_row = next(row for row in rows if row.get("test/loss"))
    assert {key: float(test_row[key]) for key in final if key.startswith("test/")} == pytest.approx(
        {key: value for key, value in final.items() if key.startswith("test/")}, rel=1e-6
    )


def test_tensorboard_still_gets_everything_and_one_line_names_the_rest(sweep: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(sweep["runs"]["vae"] / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert all(len(events.Images(tag)) == EPOCHS for tag in GRID_SIZES)
    assert "latent/kl_per_dim" in events.Tags()["histograms"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    lines = [line for line in sweep["output"].splitlines() if line.startswith("INFO aevae.callbacks:")]
    expected = (
        "INFO aevae.callbacks: callbacks reconstructions, prior_samples, interpolations skip CSVLogger; "
        "callbacks projector, histograms skip MLFlowLogger, WandbLogger, CSVLogger"
    )
    assert lines == [expected, expected], lines  # one line per job


def test_several_loggers_at_once_is_hydras_list_syntax(tmp_path: Path) -> None:
    cfg = compose_config(["logger=[tensorboard,mlflow]"], output_dir=tmp_path)
    assert list(cfg.logger) == ["tensorboard", "mlflow"]
    assert cfg.logger.mlflow.tracking_uri == f"file:{tmp_path}/mlruns" and cfg.logger.tensorboard.save_dir
    wandb = compose_config(["logger=wandb"], output_dir=tmp_path).logger.wandb
    assert wandb.offline is True and wandb.save_dir == str(tmp_path)


@pytest.mark.parametrize("logger,message", [
    ("mlflow", "logger=mlflow needs MLflow: pip install 'aevae[mlflow]'"),
    ("wandb", "logger=wandb needs W&B (wandb): pip install 'aevae[wandb]'"),
])  # fmt: skip
def test_a_missing_tracker_names_its_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: str, message: str
) -> None:
    cfg = compose_config([f"logger={logger}"], output_dir=tmp_path)
    import aevae.config

    def not_installed(name: str) -> None:
        raise ImportError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(aevae.config.importlib, "import_module", not_installed)
    with pytest.raises(UserError) as raised:
        trackers.prepare(logger, cfg.logger[logger])
    assert str(raised.value) == message


class FakeRun:
    def __init__(self) -> None:
        self.exit_codes: list[int] = []

    def finish(self, exit_code: int) -> None:
        self.exit_codes.append(exit_code)


@pytest.mark.parametrize("fails", [False, True])
def test_a_jobs_wandb_run_closes_as_finished_or_failed(monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    from types import SimpleNamespace

    from aevae.commands.train import own_tracker_runs

    open_run = FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(run=open_run))
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext(), own_tracker_runs():
        if fails:
            raise RuntimeError("the job failed")
    assert open_run.exit_codes == [1 if fails else 0]
