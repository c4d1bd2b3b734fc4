"""`aevae-eval` and `aevae-compare` on real short runs, and the estimators behind them."""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from aevae.data import MNISTDataModule, to_float
from aevae.evaluation.compression import UniformQuantizer, compressed_quality
from aevae.evaluation.likelihood import likelihood_bounds
from aevae.evaluation.reconstruction import decoding_quality
from aevae.evaluation.representation import fit_linear_probe
from aevae.losses import log_mean_exp
from aevae.models import load_checkpoint, resolve_checkpoint
from aevae.sampling.latents import encode_all
from conftest import REPO, command, finish, mnist_root, png_size, read_metrics, run, start

#: Small but complete: every measure, fewer draws and samples, a judge trained for one epoch.
SMALL_EVAL = (
    "eval.iw_samples=64",
    "eval.num_samples=1000",
    "eval.interpolation_pairs=50",
    "eval.judge_epochs=1",
)


@pytest.fixture(scope="module")
def evaluated(trained: dict[str, Path]) -> dict[str, Path]:
    """`aevae-eval` of the session's AE and VAE runs, side by side; the run dirs."""
    procs = {m: start(*command("eval"), f"run_dir={trained[m]}", *SMALL_EVAL) for m in ("ae", "vae")}
    for model, proc in procs.items():
        finish(proc, f"aevae-eval of the {model}")
    return trained


def read_eval(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval.json").read_text())


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_every_metric_is_finite_and_in_range(evaluated: dict[str, Path], model: str) -> None:
    report = read_eval(evaluated[model])
    metrics = report["metrics"]
    assert report["model"] == model.upper() and report["latent_dim"] == 32
    assert Path(report["checkpoint"]).parent == evaluated[model] / "checkpoints"
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0 < metrics["recon/mse"] < 0.1 and 0 < metrics["recon/bce"] < 784 * math.log(2)
    assert metrics["recon/mse"] == pytest.approx(read_metrics(evaluated[model])["test/mse"], rel=1e-4)
    assert 10 < metrics["recon/psnr"] < 40 and 0 <= metrics["latent/active_units"] <= 32
    # 80 steps of training: far above chance (0.1) already
    assert 0.8 <= metrics["repr/linear_probe"] <= 1 and 0.6 <= metrics["repr/knn"] <= 1
    assert 0 < metrics["smoothness/step_change"] < 1 and metrics["smoothness/max_step_ratio"] >= 1
    assert 0.1 <= metrics["samples/digit_likeness"] <= 1 and 1 <= metrics["samples/inception_score"] <= 10
    assert metrics["samples/judge_accuracy"] > 0.9
    assert metrics["compression/bits"] == 8 and metrics["compression/code_bytes"] == 32
    assert metrics["compression/raw_bytes"] == 784 and metrics["compression/ratio"] == 24.5
    rows = report["rate_distortion"]
    assert [r["bits"] for r in rows] == [2, 4, 8, 16] and [r["code_bytes"] for r in rows] == [8, 16, 32, 64]
    assert rows[0]["mse"] > rows[1]["mse"] > rows[2]["mse"] >= rows[3]["mse"] * 0.999
    assert rows[0]["psnr"] < rows[1]["psnr"] < rows[2]["psnr"]
    assert png_size(evaluated[model] / "samples.png") == (242, 242)  # 64 samples, 8 a row


def test_vae_likelihood_bounds_are_ordered(evaluated: dict[str, Path]) -> None:
    metrics = read_eval(evaluated["vae"])["metrics"]
    assert metrics["likelihood/iw_samples"] == 64
    assert metrics["likelihood/kl"] > 0
    assert metrics["likelihood/iw_nll"] < metrics["likelihood/neg_elbo"] < 784 * math.log(2)
    # the model's own one-draw -ELBO on the same test set, as logged by aevae-train
    assert metrics["likelihood/neg_elbo"] == pytest.approx(
        read_metrics(evaluated["vae"])["test/neg_elbo"], rel=0.01
    )
    assert "likelihood/iw_nll" not in read_eval(evaluated["ae"])["metrics"]
    assert metrics["latent/tc"] > 0 and "latent/tc" not in read_eval(evaluated["ae"])["metrics"]


def test_eval_prints_a_table_and_writes_where_asked(trained: dict[str, Path], tmp_path: Path) -> None:
    ckpt = trained["ae"] / "checkpoints" / "last.ckpt"
    out = tmp_path / "elsewhere" / "eval.json"
    proc = run(*command("eval"), f"ckpt={ckpt}", f"out={out}", *SMALL_EVAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_eval(out.parent)["checkpoint"] == str(ckpt) and (out.parent / "samples.png").is_file()
    lines = proc.stdout.splitlines()
    assert any(line.split()[:1] == ["repr/linear_probe"] for line in lines), proc.stdout
    assert any("rate-distortion" in line for line in lines)


# -- the estimators ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_and_images(trained: dict[str, Path]) -> tuple:
    model = load_checkpoint(resolve_checkpoint(trained["vae"]))
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False)
    datamodule.setup()
    return model, to_float(datamodule.splits["test"][0][:100])


def test_log_mean_exp_is_exact_far_below_exp_range() -> None:
    values = torch.tensor([[-1e4, -2e4, -5e3], [-1e4 + math.log(3), -2e4, -5e3 + 1]], dtype=torch.float32)
    got = log_mean_exp(values, dim=0)
    expected = torch.logsumexp(values.double(), 0) - math.log(2)
    assert torch.isfinite(got).all() and torch.allclose(got.double(), expected, rtol=0, atol=1e-3)
    assert got[0].item() == pytest.approx(-1e4 + math.log(2), abs=1e-3)  # log((1 + 3) / 2) above -1e4
    assert log_mean_exp(torch.full((1000, 2), -3e4), dim=0).tolist() == pytest.approx([-3e4, -3e4])
    naive = values.exp().mean(0).log()
    assert torch.isinf(naive).all()  # what it guards against


def test_importance_weighted_bound_tightens_with_more_draws(vae_and_images: tuple) -> None:
    model, images = vae_and_images
    estimates = {}
    with torch.no_grad():
        for k in (1, 10, 100, 1000):
            bounds = likelihood_bounds(model, images, k, generator=torch.Generator().manual_seed(k))
            assert (bounds["iw_nll"] <= bounds["neg_elbo"] + 1e-4).all()  # on the same draws
            estimates[k] = bounds["iw_nll"].mean().item()
            if k == 1:
                torch.testing.assert_close(bounds["iw_nll"], bounds["neg_elbo"])
    assert estimates[1] > estimates[10] > estimates[100] > estimates[1000], estimates
    assert estimates[1] - estimates[1000] > 1  # nats: the bound is far from tight at k = 1


def test_passes_do_not_change_the_estimate(vae_and_images: tuple) -> None:
    model, images = vae_and_images
    with torch.no_grad():
        one = likelihood_bounds(model, images[:10], 300, 10**6, generator=torch.Generator().manual_seed(0))
        many = likelihood_bounds(model, images[:10], 300, 70, generator=torch.Generator().manual_seed(0))
        log_w = model.log_weights(images[:10], 300, torch.Generator().manual_seed(0))
    for name in one:
        torch.testing.assert_close(one[name], many[name], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(one["iw_nll"], -log_mean_exp(log_w), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_linear_probe_solves_scikit_learns_objective(c: float) -> None:
    """At the probe's weights the gradient of ||W||^2/2 + C * summed cross-entropy vanishes:
    the fit converged, and to scikit-learn's default problem (C = 1), not a stronger one."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (600,), generator=generator)
    codes = torch.randn(600, 5, generator=generator) + torch.eye(3, 5)[labels] * 1.5
    weight, bias = fit_linear_probe(codes, labels, classes=3, inverse_regularization=c)
    weight.requires_grad_(), bias.requires_grad_()
    summed = torch.nn.functional.cross_entropy(codes @ weight + bias, labels, reduction="sum")
    (weight.square().sum() / 2 + c * summed).backward()
    assert weight.norm() > 0.1 and torch.cat([weight.grad.flatten(), bias.grad]).abs().max() < 1e-3 * c * 600


def test_quantization_at_16_bits_keeps_the_float_quality(trained: dict[str, Path]) -> None:
    model = load_checkpoint(resolve_checkpoint(trained["ae"]))
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False, train_size=5000)
    datamodule.setup()
    train, test = (to_float(datamodule.splits[s][0]) for s in ("train", "test"))
    with torch.no_grad():
        train_codes, codes = encode_all(model, train), encode_all(model, test[:2000])
        exact = decoding_quality(model, codes, test[:2000])["mse"]
        quality = {b: compressed_quality(model, test[:2000], codes, train_codes, b) for b in (2, 16)}
    assert quality[16]["mse"] == pytest.approx(exact, rel=0.01)
    assert quality[2]["mse"] > 1.01 * exact
    quantizer = UniformQuantizer.fit(train_codes, 8)
    levels = quantizer.encode(codes)
    assert levels.min() >= 0 and levels.max() <= 255
    inside = (codes >= quantizer.low) & (codes <= quantizer.low + 255 * quantizer.step)
    error = (quantizer.decode(levels) - codes).abs()
    assert (error[inside] <= (quantizer.step / 2).expand_as(error)[inside] + 1e-6).all()


# -- mistakes: one line, no traceback --------------------------------------------------------------
def test_bad_checkpoints_get_one_line(tmp_path: Path, trained: dict[str, Path]) -> None:
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    cases = [
        (["ckpt=/nonexistent.ckpt"], "ckpt=/nonexistent.ckpt does not exist or is not a file"),
        ([f"ckpt={tmp_path / 'notes.ckpt'}"], "is not a readable checkpoint"),
        ([f"ckpt={tmp_path / 'foreign.ckpt'}"], "is not an aevae checkpoint"),
        ([f"run_dir={tmp_path}"], "is a folder without checkpoints"),
        ([], "give one of ckpt=CHECKPOINT or run_dir=RUN_DIR"),
        ([f"run_dir={trained['ae']}", "eval.iw_samples=0"], "eval.iw_samples=0 is not allowed"),
        ([f"run_dir={trained['ae']}", "eval.bits=40"], "eval.bits=40 is not allowed"),
        ([f"run_dir={trained['ae']}", "eval.probe_c=0"], "eval.probe_c=0 is not allowed"),
        ([f"run_dir={trained['ae']}", "data.noise=blur"], "data.noise='blur' is not allowed"),
        ([f"run_dir={trained['ae']}", "device=tpu"], "device='tpu' is not allowed"),
        (  # checked before the measuring, not after it
            [f"run_dir={trained['ae']}", f"out={tmp_path / 'notes.ckpt' / 'eval.json'}"],
            f"{tmp_path / 'notes.ckpt'} cannot be created: {tmp_path / 'notes.ckpt'} is a file, not a folder",
        ),
    ]

    def check(case: tuple[list[str], str]) -> str | None:
        args, expected = case
        proc = run(*command("eval"), *args)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("aevae-eval: error: ")]
        if (
            proc.returncode == 2
            and len(errors) == 1
            and expected in errors[0]
            and "Traceback" not in proc.stderr
        ):
            return None
        return f"{args}: exit {proc.returncode}, expected one line with {expected!r}:\n{proc.stderr[-1500:]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(check, cases) if f]
    assert not failures, "\n".join(failures)


# -- the AE-vs-VAE report ----------------------------------------------------------------------
def test_compare_builds_the_tutorial_table(evaluated: dict[str, Path], tmp_path: Path) -> None:
    script = REPO / "scripts" / "compare.py"
    proc = run(
        sys.executable, str(script), str(evaluated["ae"]), str(evaluated["vae"]), "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "compare.md").read_text().splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["tutorial's row", "measure", "AE (ae)", "VAE (vae)"]
    rows = {row[1]: row[2:] for row in cells[2:]}
    assert rows["−ELBO, nats/image ↓"][0] == "—" and rows["−ELBO, nats/image ↓"][1] != "—"
    ae, vae = (read_eval(evaluated[m])["metrics"]["samples/digit_likeness"] for m in ("ae", "vae"))
    assert rows["prior samples: digit-likeness ↑"] == [f"{ae:.3f}", f"{vae:.3f}"]
    assert {"active units", "linear probe accuracy ↑", "interpolation: largest / mean step ↓"} <= set(rows)
    assert not any("denoised" in row for row in rows)  # neither run was evaluated on noisy data
    assert png_size(tmp_path / "compare.png")[0] > 2 * 242


def test_compare_names_its_columns(evaluated: dict[str, Path], tmp_path: Path) -> None:
    runs = [str(evaluated["ae"]), str(evaluated["vae"])]
    proc = run(*command("compare"), *runs, "--out", str(tmp_path), "--names", "MLP AE", "MLP VAE")
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = (tmp_path / "compare.md").read_text().splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")][2:] == ["MLP AE", "MLP VAE"]
    proc = run(*command("compare"), *runs, "--out", str(tmp_path), "--names", "one")
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and errors == [
        "aevae-compare: error: --names needs one name per run: got 1 for 2 runs"
    ], proc.stderr


def test_a_stale_cached_judge_is_retrained(
    evaluated: dict[str, Path], private_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A judge cached by a version whose Classifier had other layers is trained again, not a crash."""
    import shutil

    from aevae.evaluation.judge import digit_judge

    stale = tmp_path / "cache"
    shutil.copytree(private_cache / "judge", stale / "judge")
    checkpoints = sorted((stale / "judge" / "mnist-1epochs" / "checkpoints").glob("*.ckpt"))
    for path in checkpoints:  # what an older Classifier would have saved: other parameter names
        saved = torch.load(path, weights_only=True)
        saved["state_dict"] = {k.replace("head.", "old_head."): v for k, v in saved["state_dict"].items()}
        torch.save(saved, path)
    monkeypatch.setenv("AEVAE_CACHE", str(stale))
    judge, run_dir = digit_judge({"name": "mnist", "root": str(mnist_root())}, 1, torch.device("cpu"))
    assert run_dir == stale / "judge" / "mnist-1epochs"
    assert judge(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    fresh = torch.load(sorted((run_dir / "checkpoints").glob("*.ckpt"))[0], weights_only=True)
    assert any(k.startswith("head.") for k in fresh["state_dict"])
