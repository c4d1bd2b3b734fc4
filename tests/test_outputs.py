"""Run and sweep dirs that never collide; disks that refuse (full, read-only, not creatable)."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
import yaml

from aevae.files import DiskError, atomic_open, write_text
from conftest import EXE, QUIET, SMALL_DATA, run, run_env

TINY = (*SMALL_DATA, *QUIET, "trainer.max_steps=4", "logger=none")
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def start_in(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        list(args), cwd=cwd, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def squat(root: Path, seconds: int = 180) -> set[Path]:
    """Take the default dir of every second from now on, as runs that started then would: a new
    run has to find another (and runs started together race for the same next name)."""
    now = datetime.now()
    stamps = {(now + timedelta(seconds=s)).strftime("%Y-%m-%d/%H-%M-%S") for s in range(seconds)}
    taken = {root / stamp for stamp in stamps}
    for folder in taken:
        folder.mkdir(parents=True)
    return taken


def all_finish(procs: list[subprocess.Popen]) -> None:
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]


def test_runs_started_together_get_a_dir_each(tmp_path: Path) -> None:
    taken = squat(tmp_path / "outputs" / "runs")
    seeds = (1, 2, 3, 4)
    all_finish([start_in(tmp_path, EXE, *TINY, f"seed={seed}") for seed in seeds])

    runs = [d for d in (tmp_path / "outputs" / "runs").glob("*/*") if d not in taken]
    assert len(runs) == len(seeds), runs  # one each, and no stray dir claimed twice
    assert all(not any(d.iterdir()) for d in taken)  # nobody wrote into a dir another run holds
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-\d\d", d.name) for d in runs)  # <time>-02 ...
    assert not (tmp_path / "outputs" / "multirun").exists()
    by_seed = {}
    for run_dir in runs:
        seed = yaml.safe_load((run_dir / "config.yaml").read_text())["seed"]
        log = (run_dir / "train.log").read_text()
        assert re.findall(r"Seed set to (\d+)", log) == [str(seed)]  # one run wrote here
        (logged,) = re.findall(r"metrics \(rank 0\): (\{.*\})", log)
        assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(logged)
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["aevae_config"]["seed"] == seed
        assert Path(checkpoint["aevae_config"]["paths"]["output_dir"]) == run_dir.resolve()
        by_seed[seed] = json.loads(logged)["test/bce"]
    assert sorted(by_seed) == list(seeds) and len(set(by_seed.values())) == len(seeds)


def test_sweeps_started_together_get_a_dir_each(tmp_path: Path) -> None:
    """The joblib launcher's workers resolve the sweep dir again, in other processes."""
    taken = squat(tmp_path / "outputs" / "multirun")
    all_finish(
        [
            start_in(tmp_path, EXE, "-m", *TINY, "seed=1,2"),
            start_in(tmp_path, EXE, "-m", *TINY, "seed=3,4", *JOBLIB),
        ]
    )
    sweeps = [d for d in (tmp_path / "outputs" / "multirun").glob("*/*") if d not in taken]
    assert len(sweeps) == 2 and all(not any(d.iterdir()) for d in taken)
    seeds = set()
    for sweep in sweeps:
        jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
        assert [d.name[:2] for d in jobs] == ["0_", "1_"]
        assert all((d / "metrics.json").is_file() for d in jobs)
        seeds |= {yaml.safe_load((d / "config.yaml").read_text())["seed"] for d in jobs}
    assert seeds == {1, 2, 3, 4}
    assert not (tmp_path / "outputs" / "runs").exists()


# -- disks that refuse ---------------------------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path: Path) -> Path:
    """An existing folder nobody may write into: chmod for a user; for root (whom chmod does not
    stop) a read-only tmpfs where mounting is allowed, else a sysfs folder."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]).returncode == 0:
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root, mount not allowed and no /sys: no folder root cannot write")
    yield Path("/sys/kernel")


def refused(proc: subprocess.CompletedProcess, expected: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("aevae-train: error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_run_dirs_that_cannot_be_created_or_written_get_one_line(tmp_path: Path, read_only_dir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        ([f"hydra.run.dir={blocker / 'run'}"], f"cannot be created: {blocker} is a file, not a folder"),
        (["-m", f"hydra.sweep.dir={blocker / 'sweep'}", "seed=1,2"], f"hydra.sweep.dir={blocker / 'sweep'}"),
        ([f"hydra.run.dir={read_only_dir}"], f"hydra.run.dir={read_only_dir} is not writable"),
    ]
    for overrides, expected in cases:
        refused(run(EXE, *overrides, "logger=none"), expected)
    # the default dir under a working directory that cannot hold it
    proc = run(EXE, "logger=none", cwd=read_only_dir)
    refused(proc, "hydra.run.dir=outputs/runs/")
    assert f"(under {read_only_dir}) cannot be created" in proc.stderr
    assert "give hydra.run.dir a folder you can write to" in proc.stderr


FULL_DISK = """
import errno, os, sys
from aevae.commands.train import main

# argv: SUFFIX N overrides...: the fsync of the (N+1)-th file named *SUFFIX.tmp finds the disk full
suffix, allowed = sys.argv.pop(1), int(sys.argv.pop(1))
real_fsync, seen = os.fsync, []

def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]
    if name.startswith(suffix + ".") and name.endswith(".tmp"):
        seen.append(fd)
        if len(seen) > allowed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_fsync(fd)

os.fsync = fsync
main()
"""


@pytest.mark.parametrize("target, allowed", [("last.ckpt", 1), ("metrics.json", 0)])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, target: str, allowed: int) -> None:
    """The disk fills while writing the second checkpoint (or metrics.json): one line, exit 2,
    the checkpoint written before still loads, no temporary file is left."""
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    run_dir = tmp_path / "run"
    overrides = (*TINY, "trainer.max_steps=8", "callbacks.step_checkpoint.every_n_train_steps=4")
    proc = run(sys.executable, str(script), target, str(allowed), *overrides, f"hydra.run.dir={run_dir}")

    last = run_dir / "checkpoints" / "last.ckpt"
    kept = f"the previous {last} is intact" if target == "last.ckpt" else "nothing was written"
    written = last if target == "last.ckpt" else run_dir / "metrics.json"
    refused(proc, f"cannot write {written}: no space left on device; {kept}")
    assert torch.load(last, weights_only=True)["global_step"] == (4 if target == "last.ckpt" else 8)
    assert not (run_dir / "metrics.json").exists()
    assert not list(run_dir.rglob("*.tmp"))
    assert "no space left on device" in (run_dir / "error.txt").read_text()


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_text(target, "old\n")
    for failure in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        expected = DiskError if isinstance(failure, OSError) else KeyboardInterrupt
        with pytest.raises(expected) as err, atomic_open(target) as handle:
            handle.write("half of the new")
            raise failure
        if isinstance(failure, OSError):
            assert str(err.value) == (
                f"cannot write {target}: no space left on device; the previous {target} is intact "
                "(free space or choose another place)"
            )
        assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(DiskError, match=f"cannot write {target / 'x'}: {target} is a file, not a folder"):
        write_text(target / "x", "")
