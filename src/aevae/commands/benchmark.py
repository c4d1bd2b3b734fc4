"""`aevae-bench`: seconds per MNIST epoch against baselines timed in the same run.

    aevae-bench                       # AE and VAE on the CPU, 3 epochs each
    aevae-bench --models ae --epochs 4 --out benchmark.json

For each model it times
  (a) the classic tutorial loop as written: torchvision ToTensor + DataLoader, 60k images;
  (b) a hand-written eager loop over the same tensor-resident split aevae trains on;
  (c) aevae at its defaults (the full `aevae-train` config: logger, checkpoints, progress bar);
  (d) aevae at batch 1024;
  (e) on a GPU, aevae with `cuda_graph=false`: its eager steps, against (c)'s captured ones.
Each runs in a fresh process. The first epoch of each is warm-up and excluded; the
median of the others is reported (over `--repeats` interleaved rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aevae.commands.cli import argument_parser

if TYPE_CHECKING:
    import torch

    from aevae.data import MNISTDataModule

# torch, Lightning and aevae's data are imported where they are used: `aevae-bench --help`
# answers without them (importing them takes seconds).

Result = dict[str, float | str]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _timed_epochs(run_epoch: Callable[[], None], epochs: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        run_epoch()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _steady(times: list[float]) -> list[float]:
    """Epoch times with the first (warm-up) epoch left out when there are others."""
    return times[1:] if len(times) > 1 else times


def _test_mse(reconstruct: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> float:
    import torch
    import torch.nn.functional as F

    from aevae.data import to_float

    total = 0.0
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            x = to_float(images[start : start + 1000]).flatten(1)
            total += F.mse_loss(reconstruct(x), x, reduction="sum").item()
    return total / images.numel()


# -- (a) the tutorial, as written (including its defects) -------------------------------
def tutorial_loop(model: str, root: str, epochs: int, device: torch.device) -> Result:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from aevae.losses import kl_std_normal

    train = datasets.MNIST(root, train=True, transform=transforms.ToTensor(), download=False)
    loader = DataLoader(train, batch_size=64, shuffle=True)
    encoder = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 32 * (2 if model == "vae" else 1)))
    if model == "ae":
        encoder.append(nn.ReLU())  # the tutorial's ReLU on the code
    decoder = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 784), nn.Sigmoid())
    encoder, decoder = encoder.to(device), decoder.to(device)
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)

    def epoch() -> None:
        for data, _ in loader:
            img = data.view(data.size(0), -1).to(device)
            if model == "ae":
                loss = criterion(decoder(encoder(img)), img)
            else:  # per-pixel mean MSE + batch-summed KL: the mix that collapses the posterior
                mu, log_var = encoder(img).chunk(2, dim=1)
                z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
                loss = criterion(decoder(z), img) + kl_std_normal(mu, log_var).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    times = _timed_epochs(epoch, epochs, device)
    test = datasets.MNIST(root, train=False, download=False).data.to(device)
    mse = _test_mse(lambda x: decoder(encoder(x)[:, :32]), test)
    return {"epoch_times": times, "images": len(train), "test_mse": mse}


# -- (b) the eager floor: no framework, same data path and math as aevae's defaults ------
def hand_loop(model: str, dm: MNISTDataModule, epochs: int, device: torch.device, seed: int) -> Result:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from aevae.data import TensorBatches
    from aevae.data.batches import shuffled
    from aevae.losses import kl_std_normal

    torch.manual_seed(seed)
    images, labels = (t.to(device) for t in dm.splits["train"])
    batches = TensorBatches(images, labels, dm.batch_size, sampler=shuffled(len(images), seed))
    code = 32 * (2 if model == "vae" else 1)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, code)).to(device)
    decoder = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 784)).to(device)
    # aevae's default optimizer, so that (c)/(b) measures the framework, not the optimizer
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=True)

    def epoch() -> None:
        for x, _ in batches:
            x = x.flatten(1)
            if model == "ae":
                loss = F.binary_cross_entropy_with_logits(decoder(encoder(x)), x, reduction="sum") / len(x)
            else:
                mu, log_var = encoder(x).chunk(2, dim=1)
                z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
                recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(1)
                loss = (recon + kl_std_normal(mu, log_var)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    times = _timed_epochs(epoch, epochs, device)
    mse = _test_mse(lambda x: torch.sigmoid(decoder(encoder(x)[:, :32])), dm.splits["test"][0].to(device))
    return {"epoch_times": times, "images": len(images), "test_mse": mse}


# -- (c)/(d) aevae itself, through the same build path as `aevae-train` ----------------------
def aevae_run(model: str, overrides: list[str], epochs: int) -> Result:
    from aevae.callbacks import EpochTimer
    from aevae.commands.train import build
    from aevae.config import compose_config

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config([f"model={model}", f"trainer.max_epochs={epochs}", *overrides], output_dir=out)
        run = build(cfg)
        timer = next(c for c in run.trainer.callbacks if isinstance(c, EpochTimer))
        run.trainer.fit(run.model, datamodule=run.datamodule)
        run.trainer.test(run.model, datamodule=run.datamodule, verbose=False)
        mse = float(run.trainer.callback_metrics["test/mse"])
        images = run.datamodule.splits["train"][0].shape[0]
    return {"epoch_times": timer.epoch_seconds, "images": images, "test_mse": mse}


# -- the whole command: startup and memory -------------------------------------------------
def _train_exe() -> str:
    return str(Path(sys.executable).with_name("aevae-train"))


def one_step_command(root: str, accelerator: str) -> dict[str, float]:
    """`aevae-train trainer.max_steps=1` in a fresh process: seconds from launch to the end of
    its first optimizer step, and to the command's exit."""
    with tempfile.TemporaryDirectory() as out:
        clock = Path(out) / "first_step"
        args = [f"data.root={root}", f"trainer.accelerator={accelerator}", "trainer.max_steps=1"]
        args += ["test=false", "logger=none", "callbacks=none", f"hydra.run.dir={out}/run"]
        args += ["+callbacks.clock._target_=aevae.callbacks.timer.FirstStepClock"]
        args += [f"+callbacks.clock.path={clock}"]
        start = time.time()
        subprocess.run([_train_exe(), *args], check=True, capture_output=True)
        whole = time.time() - start
        stamp, steps = clock.read_text().split()
    if steps != "1":
        raise RuntimeError(f"the first training batch ran {steps} optimizer steps, not 1")
    return {"command_to_first_step_s": float(stamp) - start, "one_step_command_s": whole}


def command_costs(root: str, accelerator: str) -> dict[str, float]:
    """Startup (see `one_step_command`) and the peak RSS of a default one-epoch run."""
    import resource

    costs = one_step_command(root, accelerator)
    with tempfile.TemporaryDirectory() as out:
        epoch = [f"data.root={root}", f"trainer.accelerator={accelerator}", "trainer.max_epochs=1"]
        subprocess.run([_train_exe(), *epoch, f"hydra.run.dir={out}"], check=True, capture_output=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return {**costs, "default_epoch_peak_rss_mb": peak_kb / 1024}


CONTENDERS = ("tutorial", "hand", "aevae", "aevae_eager", "aevae_b1024")
#: Run only on a GPU: on the CPU, aevae's steps are eager anyway.
GPU_ONLY = ("aevae_eager",)


def measure(name: str, model: str, args: argparse.Namespace) -> Result:
    """Time one contender in this process."""
    import torch

    from aevae.data import MNISTDataModule

    device = torch.device(args.device)
    if device.type != "cuda":  # as aevae-train does (see aevae.commands.train.build), for every contender
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    dm = MNISTDataModule(root=args.data_root, download=False, train_size=args.train_size)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    common = [f"data.root={dm.root}", f"trainer.accelerator={accelerator}", f"seed={args.seed}"]
    common += [f"data.train_size={args.train_size}"] if args.train_size else []
    if name == "tutorial":
        return tutorial_loop(model, str(dm.root), args.epochs, device)
    if name == "hand":
        dm.setup()
        return hand_loop(model, dm, args.epochs, device, args.seed)
    variant = {"aevae_b1024": ["data.batch_size=1024"], "aevae_eager": ["cuda_graph=false"]}.get(name, [])
    return aevae_run(model, [*common, *variant], args.epochs)


def _in_fresh_process(name: str, model: str, args: argparse.Namespace) -> Result:
    """Each measurement gets a process of its own: in a shared one, the order of runs
    changes the timings by more than the differences being measured."""
    cmd = [
        sys.executable,
        "-m",
        "aevae.commands.benchmark",
        "--worker",
        name,
        model,
        "--epochs",
        str(args.epochs),
    ]
    cmd += ["--device", args.device, "--seed", str(args.seed)]
    cmd += ["--data-root", args.data_root] if args.data_root else []
    cmd += ["--train-size", str(args.train_size)] if args.train_size else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}/{model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.rsplit("RESULT ", 1)[1])


def main(argv: list[str] | None = None) -> int:
    """The `aevae-bench` command; exit status 0 (`run` returns the report)."""
    run(argv)
    return 0


def run(argv: list[str] | None = None) -> dict:
    parser = argument_parser("aevae-bench", __doc__)
    parser.add_argument("--models", nargs="+", default=["ae", "vae"], choices=["ae", "vae"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement (first is warm-up)")
    parser.add_argument("--device", default=None, help="default: cuda when there is a GPU, else cpu")
    parser.add_argument("--data-root", default=None, help="default: $AEVAE_DATA or ./data")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*CONTENDERS, "command"])
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all runs, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="training images of (b)-(e) (default: all 55k); for smoke runs",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark.json"))
    parser.add_argument("--worker", nargs=2, metavar=("RUN", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    from aevae.data import MNISTDataModule

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        print("RESULT " + json.dumps(measure(*args.worker, args)))
        return {}

    on_gpu = torch.device(args.device).type == "cuda"
    names = [n for n in CONTENDERS if n not in args.skip and (on_gpu or n not in GPU_ONLY)]
    rounds = [  # interleaved, so drift in the machine's speed hits every contender alike
        {(name, model): _in_fresh_process(name, model, args) for model in args.models for name in names}
        for _ in range(args.repeats)
    ]
    results = {
        model: {
            name: {
                "epoch_s": statistics.median(
                    t for r in rounds for t in _steady(r[name, model]["epoch_times"])
                ),
                # all epochs, warm-up included: the training time behind test_mse
                "train_s": statistics.median(sum(r[name, model]["epoch_times"]) for r in rounds),
                "images": rounds[-1][name, model]["images"],
                "test_mse": rounds[-1][name, model]["test_mse"],
                "epoch_times": [r[name, model]["epoch_times"] for r in rounds],  # to judge the spread
            }
            for name in names
        }
        for model in args.models
    }
    device = torch.device(args.device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    root = str(MNISTDataModule(root=args.data_root).root)
    costs = command_costs(root, accelerator) if "command" not in args.skip else {}
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "warmup_epochs_excluded": 1 if args.epochs > 1 else 0,
        "results": results,
        "command": costs,
    }
    _print_table(report)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


def _time_ratio(run: Result, base: Result | None) -> str:
    """Time per image of `run` over that of `base` (epochs of 55k and 60k images compare)."""
    if base is None:
        return "-"
    return f"{(run['epoch_s'] / run['images']) / (base['epoch_s'] / base['images']):.2f}"


def _print_table(report: dict) -> None:
    print(
        f"\n{report['device']}, torch {report['torch']}, {report['date']}; "
        f"median of epochs 2..{report['epochs']} of {report['repeats']} round(s) (epoch 1 is warm-up); "
        "ratios are time per image"
    )
    header = f"{'model':5} {'run':12} {'s/epoch':>8} {'images/s':>9} "
    header += f"{'x tutorial':>10} {'x hand':>7} {'test mse':>9} {'train s':>8}"
    print(header)
    print("-" * len(header))
    for model, runs in report["results"].items():
        for name, r in runs.items():
            print(
                f"{model:5} {name:12} {r['epoch_s']:8.3f} {r['images'] / r['epoch_s']:9.0f} "
                f"{_time_ratio(r, runs.get('tutorial')):>10} {_time_ratio(r, runs.get('hand')):>7} "
                f"{r['test_mse']:9.5f} {r['train_s']:8.2f}"
            )
    for key, value in report["command"].items():
        print(f"{key}: {value:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
