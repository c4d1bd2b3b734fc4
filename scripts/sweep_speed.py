"""Wall time of one 2x2 sweep (model=ae,vae x latent_dim=2,8) with Hydra's basic launcher
(jobs one after the other) and with the joblib launcher (n_jobs jobs side by side), in one run.

    python scripts/sweep_speed.py --epochs 2 --n-jobs 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_sweep(extra: list[str], epochs: int) -> float:
    exe = str(Path(sys.executable).with_name("aevae-train"))
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            exe,
            "-m",
            "model=ae,vae",
            "latent_dim=2,8",
            f"trainer.max_epochs={epochs}",
            "logger=none",
            "callbacks.progress_bar.refresh_rate=0",
            f"hydra.sweep.dir={out}",
            *extra,
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=os.environ)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    basic = timed_sweep([], args.epochs)
    joblib = timed_sweep(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"], args.epochs)
    print(f"2x2 sweep, {args.epochs} epoch(s) per job, {os.cpu_count()} cores")
    print(f"basic launcher:          {basic:7.1f} s")
    print(f"joblib, n_jobs={args.n_jobs}:        {joblib:7.1f} s")
    print(f"joblib / basic:          {joblib / basic:7.2f}")


if __name__ == "__main__":
    main()
