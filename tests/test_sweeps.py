"""Hydra multirun sweeps: basic and joblib launchers, failure isolation, summary, Optuna."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from aevae.commands.summary import main as summary_main
from aevae.config import FOLDER_CHARS, compose_config, one_folder
from conftest import EXE, QUIET, SMALL_DATA, run

#: One short epoch per job on real MNIST.
TINY = (*SMALL_DATA, *QUIET, "trainer.max_epochs=1", "logger=none")


def sweep(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run(EXE, "-m", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}")


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir())


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_two_by_two_sweep_and_its_summary(tmp_path: Path, launcher: list[str]) -> None:
    proc = sweep(tmp_path, "model=ae,vae", "latent_dim=2,8", *launcher)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(tmp_path)
    assert len(jobs) == 4
    names = {d.name.split("_", 1)[1] for d in jobs}
    assert ",".join(sorted([*TINY, "latent_dim=8", "model=vae"])) in names  # the job's overrides, sorted
    metrics = {d.name: json.loads((d / "metrics.json").read_text()) for d in jobs}
    assert all("test/mse" in m for m in metrics.values())
    written = (tmp_path / "summary.md").read_text()  # by the sweep itself, as it ended

    assert summary_main([str(tmp_path)]) == 0
    assert (tmp_path / "summary.md").read_text() == written
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert [(r["model"], r["latent_dim"]) for r in rows] == [
        ("ae", "2"),
        ("ae", "8"),
        ("vae", "2"),
        ("vae", "8"),
    ]
    for row in rows:  # the table carries each job's own numbers
        assert float(row["test/mse"]) == metrics[row["job"]]["test/mse"]
        assert row["test/kl"] == ("" if row["model"] == "ae" else str(metrics[row["job"]]["test/kl"]))
    assert (tmp_path / "summary.png").stat().st_size > 10_000
    assert "| ae | 2 | ok |" in (tmp_path / "summary.md").read_text()


def test_a_config_group_override_names_one_flat_job_dir(tmp_path: Path) -> None:
    proc = sweep(tmp_path, "model/net=mlp", "latent_dim=2", "test=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = job_dirs(tmp_path)
    assert "model.net=mlp" in job.name.split(",") and (job / "checkpoints" / "last.ckpt").is_file()
    assert summary_main([str(tmp_path)]) == 0


def test_a_failing_job_does_not_stop_the_others(tmp_path: Path) -> None:
    proc = sweep(tmp_path, "latent_dim=2,0,8")
    assert proc.returncode != 0  # the sweep says that a job failed
    jobs = {d.name.split("_", 1)[0]: d for d in job_dirs(tmp_path)}
    assert (jobs["0"] / "metrics.json").is_file() and (jobs["2"] / "metrics.json").is_file()
    assert "latent_dim=0 is not allowed" in (jobs["1"] / "error.txt").read_text()
    assert (proc.stdout + proc.stderr).count("latent_dim=0 is not allowed") == 1  # printed once
    # the sweep summarized itself, the failed job included, before it exited
    with open(tmp_path / "summary.csv") as f:
        statuses = {r["latent_dim"]: r["status"] for r in csv.DictReader(f)}
    assert statuses == {"0": "failed", "2": "ok", "8": "ok"}
    assert "sweep summary: 3 jobs, 1 failed" in proc.stderr + proc.stdout
    assert summary_main([str(tmp_path)]) == 1  # and so does the summary
    with open(tmp_path / "summary.csv") as f:
        rows = {r["latent_dim"]: r for r in csv.DictReader(f)}
    assert rows["0"]["status"] == "failed" and "latent_dim=0 is not allowed" in rows["0"]["error"]
    assert rows["2"]["status"] == rows["8"]["status"] == "ok"


def test_optuna_search_composes_and_runs(tmp_path: Path) -> None:
    cfg = compose_config(["hparams_search=optuna"], output_dir=tmp_path)
    assert cfg.optimized_metric == "val/loss" and cfg.model._target_ == "aevae.models.VAE"
    proc = sweep(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "test=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(job_dirs(tmp_path)) == 3
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in best and "model.lr" in best
    values = [json.loads((d / "metrics.json").read_text())["val/loss"] for d in job_dirs(tmp_path)]
    assert f"best_value: {min(values)}" in best


def test_summary_refuses_a_dir_without_jobs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no job dirs"):
        summary_main([str(tmp_path)])


def test_job_folders_of_many_overrides_stay_short_and_distinct() -> None:
    assert one_folder("model/net=conv,latent_dim=8") == "model.net=conv,latent_dim=8"
    many = [",".join(f"trainer.key_{i}={i}" for i in range(30)) + f",zoo={name}" for name in ("vae", "hvae")]
    folders = [one_folder(m) for m in many]
    assert all(len(f.encode()) <= FOLDER_CHARS for f in folders) and folders[0] != folders[1]
    assert "/" not in "".join(folders)


def test_a_key_only_the_swept_configs_have_gets_one_line_with_its_fix(tmp_path: Path) -> None:
    """Hydra composes the sweep's config with the default model (the AE: no kl_warmup_epochs)."""
    proc = run(
        EXE, "experiment=zoo", "zoo=vae,hvae", "model.kl_warmup_epochs=3", f"hydra.sweep.dir={tmp_path}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "aevae-train: error: model.kl_warmup_epochs=3: Hydra composes the sweep's own config once without "
        "the swept zoo, and that config has no model.kl_warmup_epochs; write ++model.kl_warmup_epochs=3 "
        "to set it in every job"
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
