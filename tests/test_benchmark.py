"""`aevae-bench` as a command: it runs its contenders in fresh processes and reports them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EXE, mnist_root, run


def test_bench_command_writes_its_report_and_exits_zero(tmp_path: Path) -> None:
    out = tmp_path / "benchmark.json"
    bench = str(Path(EXE).with_name("aevae-bench"))
    proc = run(
        bench, "--models", "ae", "--epochs", "2", "--skip", "tutorial", "aevae_b1024", "command",
        "--data-root", str(mnist_root()), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = report["results"]["ae"]
    assert set(runs) == {"hand", "aevae"} and report["epochs"] == 2
    assert all(r["epoch_s"] > 0 and r["images"] == 55_000 and 0 < r["test_mse"] < 0.07 for r in runs.values())
    assert all(r["train_s"] > r["epoch_s"] for r in runs.values())  # both epochs, the warm-up one too
    assert all(
        r["train_s"] == sum(r["epoch_times"][0]) and len(r["epoch_times"][0]) == 2 for r in runs.values()
    )
    assert any(line.startswith("ae    aevae") for line in proc.stdout.splitlines()), proc.stdout


def test_startup_is_timed_to_the_end_of_the_first_optimizer_step() -> None:
    """The real command, timed from outside: its first step ends before it exits (and
    `one_step_command` raises if that first batch ran more or fewer than one step)."""
    from aevae.commands.benchmark import one_step_command

    costs = one_step_command(str(mnist_root()), "cpu")
    assert 0 < costs["command_to_first_step_s"] < costs["one_step_command_s"], costs
