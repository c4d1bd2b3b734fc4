"""Every GPU figure aevae claims or wants, measured in one run and printed as one table.

    bash scripts/gpu_check.sh              # on a GPU machine: <= 8 minutes on one H100-class GPU
    bash scripts/gpu_check.sh --dry        # the same command lines on the CPU at tiny sizes

Without a GPU it runs the dry pass by itself: every step's command line, on the CPU, with a few
hundred images per run, so that it proves the check would run; the dry pass judges no goal
(CPU timings say nothing about a GPU), only that each step ran. Writes gpu_check.json (every
figure) into --out and exits 1 when a step failed or missed its goal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "callbacks.progress_bar.refresh_rate=0"]
#: What the dry pass adds to every training command: a few hundred images (and one batch of 200
#: validation and test images), the CPU.
DRY = [
    "data.train_size=640",
    "data.val_size=200",
    "data.eval_batch_size=200",
    "trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
]
#: The tutorial's 10-epoch test MSE, to be reached in <= 2 s of training on a GPU (issue 8).
QUALITY_MSE, QUALITY_S = 0.0108, 2.0


@dataclass
class Row:
    name: str
    figure: str
    goal: str
    status: str  # pass | FAIL | ran (dry pass: no goal judged) | skipped


class Check:
    def __init__(self, out: Path, dry: bool) -> None:
        self.out, self.dry = out, dry
        self.rows: list[Row] = []
        self.figures: dict[str, object] = {}

    def exe(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def run(self, what: str, cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess | None:
        """`cmd`, logged into out/logs/; None (and a FAIL row) when it fails."""
        log = self.out / "logs" / f"{re.sub(r'[^a-z0-9]+', '_', what.lower()).strip('_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"+ {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            self.row(what, f"timed out after {timeout} s", "-", "FAIL")
            return None
        log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        self.figures[f"{what} wall_s"] = round(time.perf_counter() - start, 2)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:100]
            self.row(what, f"exit {proc.returncode}: {last} (see {log})", "-", "FAIL")
            return None
        return proc

    def row(self, name: str, figure: str, goal: str, status: str) -> None:
        self.rows.append(Row(name, figure, goal, status))

    def judged(self, name: str, figure: str, goal: str, ok: bool) -> None:
        """A figure against its goal; the dry pass only says that it ran."""
        self.row(name, figure, goal, "ran" if self.dry else ("pass" if ok else "FAIL"))

    def train(self, what: str, *overrides: str) -> dict | None:
        """One `aevae-train` run (1 epoch); its metrics.json."""
        run_dir = self.out / "runs" / re.sub(r"[^a-z0-9]+", "_", what.lower()).strip("_")
        args = [
            *overrides,
            "trainer.max_epochs=1",
            *QUIET,
            *(DRY if self.dry else []),
            f"hydra.run.dir={run_dir}",
        ]
        if self.run(what, [self.exe("aevae-train"), *args]) is None:
            return None
        return json.loads((run_dir / "metrics.json").read_text())


def bench(check: Check) -> None:
    """aevae-bench: (c) at batch 64 against <= 0.5 s/epoch, the tutorial loop, the 2-s goal."""
    report = check.out / "benchmark.json"
    cmd = [check.exe("aevae-bench"), "--models", "ae", "vae", "--epochs", "4", "--out", str(report)]
    if check.dry:  # the tutorial loop reads all 60k images through a DataLoader: minutes on a CPU
        cmd += ["--device", "cpu", "--epochs", "2", "--train-size", "640", "--models", "ae"]
        cmd += ["--skip", "tutorial", "hand", "aevae_b1024", "command"]
    else:
        cmd += ["--skip", "aevae_b1024", "command"]
    if check.run("aevae-bench", cmd) is None:
        return
    results = json.loads(report.read_text())["results"]
    check.figures["benchmark"] = results
    for model, runs in results.items():
        c = runs["aevae"]
        check.judged(
            f"bench (c) {model} batch 64",
            f"{c['epoch_s']:.3f} s/epoch",
            "<= 0.5 s/epoch",
            c["epoch_s"] <= 0.5,
        )
        if "tutorial" in runs:
            speedup = (runs["tutorial"]["epoch_s"] / runs["tutorial"]["images"]) / (
                c["epoch_s"] / c["images"]
            )
            check.judged(
                f"bench (c) {model} vs tutorial loop", f"{speedup:.1f}x faster", ">= 15x", speedup >= 15
            )
        if "aevae_eager" in runs:
            eager = runs["aevae_eager"]["epoch_s"] / c["epoch_s"]
            check.row(f"bench (e) {model} eager / graphs", f"{eager:.2f}x the time", "-", "info")
    c = results["ae"]["aevae"]
    figure = f"test MSE {c['test_mse']:.4f} after {c['train_s']:.2f} s of training"
    goal = f"MSE <= {QUALITY_MSE} in <= {QUALITY_S:g} s"
    check.judged(
        "2-s quality goal (AE)", figure, goal, c["test_mse"] <= QUALITY_MSE and c["train_s"] <= QUALITY_S
    )


def graph_test(check: Check) -> None:
    """tests/test_graphs.py's real-CUDA-graph test (it skips without a GPU)."""
    test = "tests/test_graphs.py::test_cuda_graph_steps_match_eager_ones_on_a_gpu"
    proc = check.run(
        "real CUDA-graph test", [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test]
    )
    if proc is None:
        return
    summary = proc.stdout.strip().splitlines()[-1]
    if check.dry:
        check.row(
            "real CUDA-graph test", summary, "passes on a GPU", "ran" if "skipped" in summary else "FAIL"
        )
    else:
        check.row("real CUDA-graph test", summary, "1 passed", "pass" if "1 passed" in summary else "FAIL")


def trainers(check: Check) -> None:
    """trainer=gpu, DDP on one device and bf16-mixed, one epoch each."""
    for what, overrides in (
        ("trainer=gpu", ["trainer=gpu"]),
        ("trainer=ddp trainer.devices=1", ["trainer=ddp", "trainer.devices=1"]),
        ("bf16-mixed", ["trainer=gpu", "trainer.precision=bf16-mixed"]),
    ):
        metrics = check.train(what, *overrides)
        if metrics is not None:
            mse = metrics.get("test/mse", float("nan"))
            check.judged(what, f"1 epoch: test MSE {mse:.4f}", "finishes, MSE < 0.05", mse < 0.05)


def sweep(check: Check) -> None:
    """8 jobs side by side on one GPU (joblib) against one job alone (scripts/sweep_speed.py)."""
    figures = check.out / "sweep_speed.json"
    dims = ["2", "8"] if check.dry else ["2", "4", "8", "16", "32", "64", "128", "256"]
    extra = DRY if check.dry else ["trainer=gpu"]
    cmd = [sys.executable, str(REPO / "scripts" / "sweep_speed.py"), "--vs-one", "--epochs", "2"]
    cmd += ["--latent-dims", *dims, "--json", str(figures), "--extra", *extra]
    if check.run("joblib sweep vs one job", cmd) is None:
        return
    f = json.loads(figures.read_text())
    check.figures["sweep"] = f
    figure = f"{f['jobs']} jobs {f['sweep_s']:.1f} s, one {f['one_job_s']:.1f} s ({f['ratio']:.2f}x)"
    check.judged(f"{f['jobs']}-job joblib sweep vs one job", figure, "<= 2x", f["ratio"] <= 2)


def models_and_data(check: Check) -> None:
    """A short run of every model, both networks, and each data set that has a copy here."""
    sweep_dir = check.out / "models"
    args = ["-m", "model=ae,vae,iwae", "model/net=mlp,conv", "trainer.max_epochs=1", *QUIET]
    args += DRY if check.dry else ["trainer=gpu", "hydra/launcher=joblib", "hydra.launcher.n_jobs=6"]
    if check.run("models", [check.exe("aevae-train"), *args, f"hydra.sweep.dir={sweep_dir}"]) is not None:
        rows = list(csv_rows(sweep_dir / "summary.csv"))
        ok = [r for r in rows if r["status"] == "ok"]
        check.judged("models ae,vae,iwae x mlp,conv", f"{len(ok)}/{len(rows)} jobs ok", "6/6", len(ok) == 6)
    metrics = check.train(
        "classifier (experiment=digit_judge)", "experiment=digit_judge", *(["trainer=gpu"] * (not check.dry))
    )
    if metrics is not None:
        accuracy = metrics.get("test/accuracy", 0.0)
        check.judged("classifier (digit judge)", f"1 epoch: accuracy {accuracy:.3f}", "> 0.8", accuracy > 0.8)
    root = Path(os.environ.get("AEVAE_DATA") or REPO / "data")
    for name, folder in (("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")):
        if not (root / folder / "raw").is_dir():
            check.row(f"data={name}", f"no copy in {root / folder / 'raw'}", "-", "skipped")
            continue
        metrics = check.train(
            f"data={name}",
            f"data={name}",
            f"data.root={root}",
            "data.download=false",
            *(["trainer=gpu"] * (not check.dry)),
        )
        if metrics is not None:
            check.judged(f"data={name}", f"1 epoch: test MSE {metrics['test/mse']:.4f}", "finishes", True)


def colour_data(check: Check) -> None:
    """Colour images of two sizes through the nets made for them (conv at 32, resnet at 64, the
    logistic likelihood), the split streamed from pinned host memory, and the image-folder path
    against torchvision's DataLoader (scripts/data_speed.py)."""
    import numpy as np

    n = 1000 if check.dry else 20_000
    for size, net in ((32, "conv"), (64, "resnet")):
        # smooth random images (a blurred noise field), stored as a uint8 array of N x H x W x 3
        rng = np.random.default_rng(size)
        coarse = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
        images = coarse.repeat(8, axis=1).repeat(8, axis=2)
        path = check.out / f"colour{size}.npy"
        np.save(path, images)
        what = f"data=array 3x{size}x{size}, model/net={net}, loss=logistic"
        metrics = check.train(
            what, "data=array", f"data.path={path}", "model=vae", f"model/net={net}", "loss=logistic",
            "data.eval_batch_size=200", *(["trainer=gpu"] * (not check.dry)),
        )  # fmt: skip
        if metrics is not None:
            bpd = metrics.get("test/bits_per_dim", float("nan"))
            check.judged(what, f"1 epoch: test {bpd:.2f} bits/dim", "finishes, < 8 bits/dim", bpd < 8)
    test = "tests/test_datasets.py::test_a_split_over_the_device_budget_streams_the_same_batches"
    proc = check.run(
        "streamed split", [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test]
    )
    if proc is not None:
        summary = proc.stdout.strip().splitlines()[-1]
        expected = "skipped" if check.dry else "1 passed"
        check.row(
            "streamed split (pinned host memory)",
            summary,
            "passes on a GPU",
            "ran" if check.dry and expected in summary else ("pass" if expected in summary else "FAIL"),
        )
    figures = check.out / "data_speed.json"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "data_speed.py"),
        "--images",
        "500" if check.dry else "20000",
    ]
    if check.run("image folder vs DataLoader", [*cmd, "--json", str(figures)]) is not None:
        ratios = json.loads(figures.read_text())["ratios"]
        check.figures["data_speed"] = ratios
        figure = f"delivery {ratios['(a)']:.1f}x, VAE epoch {ratios['(b)']:.2f}x, cache {ratios['(c)']:.1f}x"
        check.row("image folder vs DataLoader", figure, "CPU goals: >= 10x, <= 0.6x, >= 10x", "ran")


def csv_rows(path: Path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


STEPS: tuple[Callable[[Check], None], ...] = (
    bench,
    graph_test,
    trainers,
    sweep,
    models_and_data,
    colour_data,
)


def print_table(check: Check, seconds: float) -> None:
    widths = [
        max(len(getattr(r, k)) for r in [Row("name", "figure", "goal", "status"), *check.rows])
        for k in ("name", "figure", "goal", "status")
    ]
    print()
    for r in [Row("name", "figure", "goal", "status"), *check.rows]:
        print(
            "  ".join(v.ljust(w) for v, w in zip((r.name, r.figure, r.goal, r.status), widths, strict=True))
        )
    mode = "dry pass on the CPU (no goal judged)" if check.dry else "GPU"
    print(f"\n{mode}: {len(check.rows)} rows in {seconds:.0f} s; {check.out / 'gpu_check.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry", action="store_true", help="the CPU pass at tiny sizes (default without a GPU)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs") / "gpu_check" / time.strftime("%Y-%m-%d_%H-%M-%S")
    )
    args = parser.parse_args(argv)
    import torch

    dry = args.dry or not torch.cuda.is_available()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, dry)
    start = time.perf_counter()
    for step in STEPS:
        step(check)
    seconds = time.perf_counter() - start
    device = "cpu (dry pass)" if dry else torch.cuda.get_device_name()
    rows = [r.__dict__ for r in check.rows]
    report = {
        "device": device,
        "dry": dry,
        "seconds": round(seconds, 1),
        "rows": rows,
        "figures": check.figures,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(check, seconds)
    return 1 if any(r.status == "FAIL" for r in check.rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
