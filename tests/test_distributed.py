"""Several processes, one run: DDP through the entry point (also inside a sweep), submitit, Slurm."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from aevae.engine.distributed import eval_shard
from aevae.models import load_checkpoint
from conftest import EXE, QUIET, SMALL_DATA, run

SMALL = (*SMALL_DATA, *QUIET, "trainer.max_epochs=2", "trainer.log_every_n_steps=4")
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")


def rank_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """The metrics line each rank logged (rank 0 in train.log, rank 1 in its own log)."""
    found = {}
    for log in run_dir.glob("*.log"):
        for rank, metrics in re.findall(r"metrics \(rank (\d)\): (\{.*\})", log.read_text()):
            found[int(rank)] = json.loads(metrics)
    return found


def test_eval_shards_are_disjoint_and_complete() -> None:
    shards = [list(eval_shard(10, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]


def test_ddp_on_cpu_one_run_dir_same_metrics_on_every_rank(tmp_path: Path) -> None:
    proc = run(EXE, *DDP, *SMALL, cwd=tmp_path)  # the default run dir, which rank 0 claims
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")  # the child rank claimed none of its own
    metrics = rank_metrics(run_dir)
    assert set(metrics) == {0, 1} and metrics[0] == metrics[1]  # reduced across ranks
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics[0]
    assert len(list(run_dir.rglob("metrics.json"))) == 1  # written once, no nested run dirs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert len(events.Images("media/reconstructions")) == 2  # one per epoch: rank 0 alone draws
    assert not [p for p in run_dir.rglob(".hydra") if p.parent != run_dir]
    assert "global batch 128 = 64 per process x 2 process(es)" in (run_dir / "train.log").read_text()


def test_ddp_chunks_average_gradients_across_ranks(tmp_path: Path) -> None:
    """Two CPU processes with batch B each update exactly as one process with batch 2B:
    their shards of each epoch's permutation interleave into the single process's batches."""
    for name, args in {
        "ddp": [*DDP, "data.batch_size=32"],
        "single": ["trainer=cpu", "data.batch_size=64"],
    }.items():
        proc = run(
            EXE,
            *SMALL,
            *args,
            "logger=none",
            "trainer.deterministic=true",
            f"hydra.run.dir={tmp_path / name}",
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.ckpt")
    for d, s in zip(ddp.parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(d, s, rtol=1e-4, atol=1e-5)
    assert torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40


#: The zoo's models without a DDP test of their own (AE and VAE: above; VQ-VAE: its codebook test).
DDP_ZOO = ("iwae", "cvae", "btcvae", "wae", "vamp", "hvae", "sparse_ae", "contractive_ae")


def test_every_model_trains_under_ddp_inside_a_sweep_each_job_started_once(tmp_path: Path) -> None:
    """A sweep over the models, each job two CPU ranks: every model trains and tests under DDP
    with the same reduced metrics on both ranks. (Lightning's re-launch would give the child
    ranks `-m zoo=...`: a sweep each.)"""
    tiny = ("trainer.max_steps=4", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    proc = run(
        EXE,
        "-m",
        f"zoo={','.join(DDP_ZOO)}",
        "model.hidden_dims=[32]",
        *DDP,
        *SMALL,
        *tiny,
        "logger=none",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted((d for d in tmp_path.iterdir() if d.is_dir()), key=lambda d: int(d.name.split("_")[0]))
    assert [d.name.split("_")[0] for d in jobs] == [str(i) for i in range(len(DDP_ZOO))]  # no child sweeps
    for job, model in zip(jobs, DDP_ZOO, strict=True):
        metrics = rank_metrics(job)
        assert set(metrics) == {0, 1} and metrics[0] == metrics[1], f"{model}: {metrics}"
        assert "test/loss" in metrics[0], f"{model}: {metrics[0]}"
        assert (job / "metrics.json").is_file() and (job / "train_ddp_process_1.log").is_file(), model
        assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4, model


def test_torchrun_starts_the_ranks(tmp_path: Path) -> None:
    torchrun = [str(Path(EXE).with_name("torchrun")), "--nproc_per_node=2"]
    proc = run(*torchrun, EXE, *DDP, *SMALL, "logger=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = rank_metrics(tmp_path)
    assert set(metrics) == {0, 1} and metrics[0] == metrics[1]


def test_global_batch_stays_fixed_across_process_counts(tmp_path: Path) -> None:
    proc = run(EXE, *DDP, *SMALL, "data.global_batch_size=64", "logger=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "global batch 64 = 32 per process x 2 process(es)" in (tmp_path / "train.log").read_text()
    bad = run(EXE, *DDP, *SMALL, "data.global_batch_size=63", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "data.global_batch_size=63 must be a multiple of the 2" in bad.stderr


def submitit_sweep(sweep_dir: Path, *launcher: str) -> None:
    """A 2-job latent_dim sweep through a submitit launcher: both jobs finish with metrics."""
    common = ("hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "latent_dim=2,8", *SMALL)
    proc = run(EXE, "-m", *launcher, *common, "logger=none", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(jobs) == 2 and all((d / "metrics.json").is_file() for d in jobs)


def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path) -> None:
    submitit_sweep(tmp_path, "hydra/launcher=submitit_local")
