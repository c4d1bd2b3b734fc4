"""The progress bar: optimizer steps on a terminal, a few plain lines in a log file."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pytest

from aevae.callbacks import StepProgressBar
from aevae.config import UserError
from conftest import EXE, REPO, SMALL_DATA, run_env, start

EPOCHS = 2
STEPS = 20  # SMALL_DATA: 1,280 images in batches of 64
TEST_BATCHES = 40  # 10,000 test images in batches of 250


def run_in_terminal(*overrides: str) -> tuple[int, str]:
    """`aevae-train` with stdout and stderr on a pseudo-terminal 120 columns wide, as in a shell."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([EXE, *overrides], cwd=REPO, env=run_env(), stdout=follower, stderr=follower)
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait(timeout=600)
    reader.join(timeout=30)
    os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


def redraws(output: str, prefix: str) -> list[str]:
    """Every state a bar was drawn in: the pieces between carriage returns and newlines."""
    return [part for part in re.split(r"[\r\n]", output) if part.startswith(prefix)]


def test_terminal_bar_counts_the_epochs_optimizer_steps(tmp_path: Path) -> None:
    code, out = run_in_terminal(*SMALL_DATA, f"trainer.max_epochs={EPOCHS}", f"hydra.run.dir={tmp_path}")
    assert code == 0, out[-3000:]
    for epoch in range(EPOCHS):
        drawn = redraws(out, f"Epoch {epoch}:")
        assert drawn and all(f"/{STEPS} [" in d for d in drawn), drawn  # the epoch's 20 steps, not 1 chunk
        final = [d for d in drawn if f"| {STEPS}/{STEPS} [" in d]
        assert final and " steps/s" in final[-1] and re.search(r"images/s=[\d,]+", final[-1]), drawn
    tests = redraws(out, "Testing DataLoader 0:")
    assert any(f"| {TEST_BATCHES}/{TEST_BATCHES} [" in d for d in tests), tests  # Lightning's test bar
    assert any("Validation DataLoader 0:" in d and "| 2/2 [" in d for d in re.split(r"[\r\n]", out)), out


def test_log_file_gets_a_line_per_epoch_not_redraws(tmp_path: Path) -> None:
    every_chunk = ("steps_per_chunk=5", "callbacks.progress_bar.every_n_seconds=1e-9")
    procs = {
        "default": start(  # its every-N-seconds line, never due: a slow machine prints no extra line
            EXE,
            *SMALL_DATA,
            f"trainer.max_epochs={EPOCHS}",
            "callbacks.progress_bar.every_n_seconds=3600",
            f"hydra.run.dir={tmp_path / 'a'}",
        ),
        "every_chunk": start(
            EXE, *SMALL_DATA, "trainer.max_epochs=1", *every_chunk, f"hydra.run.dir={tmp_path / 'b'}"
        ),
    }
    out = {name: proc.communicate(timeout=600)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, out[name][-3000:])
        assert "\r" not in out[name] and "\x1b[" not in out[name], name  # no redraws, no cursor moves
    lines = [line for line in out["default"].splitlines() if re.match(r"(Epoch \d|Testing)", line)]
    assert len(lines) == EPOCHS + 1, lines  # the end of each epoch and of testing: nothing in between
    for epoch, line in enumerate(lines[:EPOCHS]):
        assert line.startswith(f"Epoch {epoch}: 100% {STEPS}/{STEPS} [") and "val/loss=" in line, line
        assert re.search(r"images/s=[\d,]+", line), line
    assert lines[-1].startswith(f"Testing DataLoader 0: 100% {TEST_BATCHES}/{TEST_BATCHES} ["), lines
    # due at every chunk: a line at each chunk of 5 steps, then the epoch's line after validation
    steps = [line.split(" [")[0] for line in out["every_chunk"].splitlines() if line.startswith("Epoch")]
    assert steps == [f"Epoch 0: {100 * n // STEPS:3d}% {n}/{STEPS}" for n in (5, 10, 15, 20, 20)], steps


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"refresh_rate": -1}, "callbacks.progress_bar.refresh_rate=-1 must be a positive integer"),
        ({"every_n_seconds": 0}, "callbacks.progress_bar.every_n_seconds=0 must be a number > 0"),
    ],
)
def test_bad_settings_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        StepProgressBar(**kwargs)
