"""The tutorial's applications from real short runs: pictures (`aevae-sample`), denoising and
pretraining an encoder for a classifier with few labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from aevae.config import quote_paths
from aevae.data import MNISTDataModule
from aevae.data.noise import Corruption
from aevae.models import load_checkpoint, resolve_checkpoint
from aevae.models.classifier import Classifier
from conftest import EXE, QUIET, SMALL_DATA, aevae_train, command, mnist_root, png_size, read_metrics, run


def one_error_line(proc, program: str, expected: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{program}: error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# -- aevae-sample -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["ae", "vae"])
def test_sample_writes_every_picture(trained: dict[str, Path], model: str, tmp_path: Path) -> None:
    proc = run(
        *command("sample"), f"run_dir={trained[model]}", f"out={tmp_path}", "sample.pairs=[[0,1],[5,9]]"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 28-pixel images with 2-pixel padding: 8 per row; 2 interpolation rows of 10 steps + both ends
    assert png_size(tmp_path / "prior_samples.png") == (242, 242)
    assert png_size(tmp_path / "reconstructions.png") == (242, 242)  # 4 rows of 8, each with its recon row
    assert png_size(tmp_path / "interpolations.png") == (12 * 30 + 2, 2 * 30 + 2)
    assert png_size(tmp_path / "latents.png") == (600, 600)
    assert not (tmp_path / "manifold.png").exists()  # latent_dim 32: no plane to tile


def test_sample_draws_the_manifold_of_a_2d_latent(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    aevae_train(
        "model=vae", "latent_dim=2", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
        *SMALL_DATA, *QUIET, "logger=none", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    proc = run(*command("sample"), f"run_dir={run_dir}", "sample.manifold_size=12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png_size(run_dir / "samples" / "manifold.png") == (12 * 28, 12 * 28)
    assert png_size(run_dir / "samples" / "latents.png") == (600, 600)


def test_job_dirs_of_a_sweep_need_no_quoting(trained: dict[str, Path], tmp_path: Path) -> None:
    job_dir = tmp_path / "0_model=ae,latent_dim=32"  # what a multirun names its jobs
    job_dir.symlink_to(trained["ae"], target_is_directory=True)
    proc = run(*command("sample"), f"run_dir={job_dir}", f"out={tmp_path / 'pictures'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "pictures" / "prior_samples.png").is_file()


def test_path_overrides_are_quoted_only_where_hydra_needs_it(tmp_path: Path) -> None:
    a, b = tmp_path / "0_model=ae,latent_dim=8", tmp_path / "1_model=vae"
    a.mkdir(), b.mkdir()
    plain = ["run_dir=outputs/runs/x", "pretrained=a,null", "latent_dim=2,8", "model.lr=1e-3"]
    assert quote_paths(plain) == plain
    assert quote_paths([f"run_dir={a}"]) == [f"run_dir='{a}'"]
    assert quote_paths([f"pretrained={a},{b},null"]) == [f"pretrained='{a}','{b}',null"]
    assert quote_paths(["ckpt=/no/such=dir"]) == ["ckpt='/no/such=dir'"]  # then: does not exist


def test_sample_refuses_bad_pairs(trained: dict[str, Path]) -> None:
    proc = run(*command("sample"), f"run_dir={trained['ae']}", "sample.pairs=[[0,10000]]")
    one_error_line(proc, "aevae-sample", "10000 is not an index into the 10000 test images")


# -- denoising ----------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["gaussian", "salt_pepper", "mask"])
def test_corruption_is_seeded_and_hits_the_level(noise: str) -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    corrupt = Corruption(noise, 0.3, seed=1)
    a, b, other = corrupt(x, 0, 0), corrupt(x, 0, 0), corrupt(x, 0, 64)
    assert torch.equal(a, b) and not torch.equal(a, other)  # a function of (seed, place) alone
    assert a.min() >= 0 and a.max() <= 1
    hit = (a != x).float().mean().item()
    assert hit == pytest.approx(1.0 if noise == "gaussian" else 0.3, abs=0.02)


def test_noisy_batches_carry_their_clean_targets(mnist: Path) -> None:
    data = MNISTDataModule(root=str(mnist), train_size=640, val_size=100, noise="mask", noise_level=0.5)
    data.setup()
    noisy, labels, clean = next(iter(data.train_dataloader()))
    assert noisy.shape == clean.shape and len(labels) == len(clean) == 64
    assert torch.equal(noisy, clean * (noisy != 0)) and (noisy != clean).any()
    assert torch.equal(next(iter(data.test_dataloader()))[0], next(iter(data.test_dataloader()))[0])


def test_denoising_ae_beats_its_noisy_input(tmp_path: Path) -> None:
    run_dir = tmp_path / "denoise"
    aevae_train(  # 500 steps: past the plateau where an AE outputs the mean image
        "data.noise=gaussian", "data.noise_level=0.4", "trainer.max_epochs=1",
        "trainer.limit_train_batches=500", "data.val_size=2000", *QUIET, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    proc = run(
        *command("eval"), f"run_dir={run_dir}", "eval.iw_samples=8", "eval.num_samples=200",
        "eval.interpolation_pairs=10", "eval.judge_epochs=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "eval.json").read_text())
    metrics = report["metrics"]
    assert report["noise"].startswith("Corruption(gaussian, level=0.4")
    assert 5 < metrics["denoise/psnr_noisy"] < metrics["denoise/psnr_denoised"] - 3, metrics


# -- pretraining --------------------------------------------------------------------------------
def test_label_fraction_keeps_a_seeded_subset(mnist: Path) -> None:
    def train_labels(**kwargs) -> torch.Tensor:
        data = MNISTDataModule(root=str(mnist), label_fraction=0.01, **kwargs)
        data.setup()
        return data.splits["train"][1]

    labels = train_labels()
    assert len(labels) == 550 and len(labels.unique()) == 10
    assert torch.equal(labels, train_labels()) and not torch.equal(labels, train_labels(split_seed=1))
    assert MNISTDataModule(root=str(mnist), label_fraction=0.01).train_batches_per_epoch() == 9


def test_pretrained_encoder_is_the_autoencoders(trained: dict[str, Path]) -> None:
    vae = load_checkpoint(resolve_checkpoint(trained["vae"]))
    net = instantiate(vae.run_config["model"]["net"], _convert_="all")
    classifier = Classifier(32, net, torch.optim.Adam, pretrained=str(trained["vae"]))
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(classifier.encoder(x), vae.encode(x))  # the VAE's posterior mean
    assert not hasattr(classifier.encoder.autoencoder, "decoder")  # only the encoder is fine-tuned


def test_finetune_pretrained_and_from_scratch_in_one_sweep(trained: dict[str, Path], tmp_path: Path) -> None:
    """The README's command: one job fine-tunes the AE's encoder, the other trains from scratch."""
    sweep, ae_job = tmp_path / "sweep", tmp_path / "0_model=ae,latent_dim=32"  # a sweep's job dir
    ae_job.symlink_to(trained["ae"], target_is_directory=True)
    proc = run(
        EXE, "-m", "experiment=finetune_classifier", f"pretrained={ae_job},null",
        "trainer.max_epochs=8", "data.val_size=2000", *QUIET, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if (d / "metrics.json").is_file())
    assert len(jobs) == 2
    configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in jobs]
    assert [c["pretrained"] for c in configs] == [str(ae_job), None]
    assert all(c["data"]["label_fraction"] == 0.01 for c in configs)
    accuracy = [read_metrics(d)["test/accuracy"] for d in jobs]
    assert all(0.5 < a <= 1 for a in accuracy), accuracy  # 550 labels, 72 steps: far above chance
    summary = run(str(Path(EXE).with_name("aevae-summary")), str(sweep))
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert "test/accuracy" in (sweep / "summary.md").read_text()


def test_pretrained_mistakes_get_one_line(trained: dict[str, Path]) -> None:
    proc = run(EXE, "experiment=finetune_classifier", f"pretrained={trained['ae']}", "latent_dim=8")
    one_error_line(proc, "aevae-train", "latent_dim=32 there, 8 here")
    proc = run(EXE, "model=ae", f"pretrained={trained['ae']}")
    one_error_line(proc, "aevae-train", "is not allowed with model=AE")
    proc = run(EXE, "experiment=finetune_classifier", "pretrained=/nonexistent")
    one_error_line(proc, "aevae-train", "pretrained=/nonexistent")
    assert mnist_root()  # the data were there: the errors above are about `pretrained` alone
