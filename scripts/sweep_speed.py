"""Wall time of sweeps: the 2x2 sweep (model=ae,vae x latent_dim=2,8) with Hydra's basic launcher
(jobs one after the other) and with the joblib launcher (n_jobs jobs side by side), in one run;
or, with --vs-one, one job alone against a joblib sweep of one job per --latent-dims value, all
side by side (the GPU goal: 8 jobs on one GPU in <= 2x the time of one).

    python scripts/sweep_speed.py --epochs 2 --n-jobs 2
    python scripts/sweep_speed.py --vs-one --latent-dims 2 4 8 16 32 64 128 256 --extra trainer=gpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["logger=none", "callbacks.progress_bar.refresh_rate=0"]


def timed(args: list[str]) -> float:
    """Seconds `aevae-train ARGS` takes, with its run or sweep dir in a temporary folder."""
    exe = str(Path(sys.executable).with_name("aevae-train"))
    with tempfile.TemporaryDirectory() as out:
        where = f"hydra.sweep.dir={out}" if "-m" in args else f"hydra.run.dir={out}"
        start = time.perf_counter()
        proc = subprocess.run([exe, *args, where], capture_output=True, text=True, env=os.environ)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep_speed: error: aevae-train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def timed_sweep(extra: list[str], epochs: int) -> float:
    return timed(["-m", "model=ae,vae", "latent_dim=2,8", f"trainer.max_epochs={epochs}", *QUIET, *extra])


def one_vs_sweep(latent_dims: list[int], epochs: int, extra: list[str]) -> dict[str, float]:
    """One job alone, then one job per latent dim, all side by side (joblib)."""
    common = [f"trainer.max_epochs={epochs}", *QUIET, *extra]
    one = timed([f"latent_dim={latent_dims[0]}", *common])
    dims = ",".join(map(str, latent_dims))
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={len(latent_dims)}"]
    sweep = timed(["-m", f"latent_dim={dims}", *launcher, *common])
    return {"jobs": len(latent_dims), "one_job_s": one, "sweep_s": sweep, "ratio": sweep / one}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--vs-one", action="store_true", help="one job against a sweep of --latent-dims")
    parser.add_argument("--latent-dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every command")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.vs_one:
        figures = one_vs_sweep(args.latent_dims, args.epochs, args.extra)
        print(f"one job: {figures['one_job_s']:.1f} s; {figures['jobs']} jobs side by side (joblib): "
              f"{figures['sweep_s']:.1f} s ({figures['ratio']:.2f}x)")  # fmt: skip
    else:
        basic = timed_sweep(args.extra, args.epochs)
        joblib = timed_sweep(
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}", *args.extra], args.epochs
        )
        figures = {"basic_s": basic, "joblib_s": joblib, "ratio": joblib / basic}
        print(f"2x2 sweep, {args.epochs} epoch(s) per job, {os.cpu_count()} cores")
        print(f"basic launcher:          {basic:7.1f} s")
        print(f"joblib, n_jobs={args.n_jobs}:        {joblib:7.1f} s")
        print(f"joblib / basic:          {joblib / basic:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
