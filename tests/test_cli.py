"""Every command's help page, --version, tab completion and one-line errors, through the real
entry points."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import aevae
from aevae.config import UserError, require
from conftest import command, run

#: command -> (its module, words its help page must show, words it must not).
GROUPS = ["trainer", "callbacks", "hparams_search", "experiment"]
TRAINING = [*GROUPS, "latent_dim", "steps_per_chunk"]
PAGES = {
    "train": (
        "aevae.commands.train",
        ["aevae-train model=vae", "trainer: cpu, ddp", "model/net: conv", "experiment:", "latent_dim: 32"],
        ["is powered by Hydra"],
    ),
    "eval": (
        "aevae.commands.eval",
        ["aevae-eval run_dir=", "iw_samples: 1000", "run_dir: null", "probe_c:", "eval.json"],
        [*TRAINING, "manifold_size", "is powered by Hydra", "== Groups"],
    ),
    "sample": (
        "aevae.commands.sample",
        ["aevae-sample run_dir=", "pairs:", "manifold_size: 20", "reconstructions.png"],
        [*TRAINING, "iw_samples", "is powered by Hydra", "== Groups"],
    ),
    "export": (
        "aevae.commands.export",
        ["aevae-export run_dir=", "format: onnx", "opset: null", "export.json"],
        [*TRAINING, "iw_samples", "is powered by Hydra", "== Groups"],
    ),
    "compare": ("aevae.commands.compare", ["aevae-compare RUN_DIR", "--names", "--out", "--version"], GROUPS),
    "summary": (
        "aevae.commands.summary",
        ["aevae-summary outputs/multirun/", "sweep_dir", "--version"],
        GROUPS,
    ),
    "bench": (
        "aevae.commands.benchmark",
        ["aevae-bench --models ae", "--epochs", "--repeats", "--version"],
        GROUPS,
    ),
}

#: Runs a command's main() with --help, then names the heavy modules that got imported.
HELP_SCRIPT = """
import importlib, sys
module, program = sys.argv[1:]
sys.argv = [program, "--help"]
try:
    importlib.import_module(module).main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print("IMPORTED:", sorted(m for m in ("torch", "lightning", "matplotlib") if m in sys.modules))
"""


def _help(name: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-c", HELP_SCRIPT, PAGES[name][0], f"aevae-{name}")


def test_each_help_page_shows_its_own_keys_only_and_imports_nothing_heavy() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        pages = dict(zip(PAGES, pool.map(_help, PAGES), strict=True))
    for name, proc in pages.items():
        _, present, absent = PAGES[name]
        assert proc.returncode == 0, f"aevae-{name} --help: {proc.stderr[-2000:]}"
        page, imported = proc.stdout.rsplit("IMPORTED:", 1)
        assert page.lstrip().startswith(f"aevae-{name}") or f"usage: aevae-{name}" in page, page[:300]
        assert [w for w in present if w not in page] == [], f"aevae-{name} --help lacks them:\n{page}"
        assert [w for w in absent if w in page] == [], f"aevae-{name} --help shows them:\n{page}"
        # --help answers at once: torch and Lightning take seconds to import
        assert imported.strip() == "[]", f"aevae-{name} --help imported {imported.strip()}"


def test_each_command_prints_its_version() -> None:
    expected = importlib.metadata.version("aevae")
    assert aevae.__version__ == expected
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(PAGES, pool.map(lambda n: run(*command(n), "--version"), PAGES), strict=True))
    for name, proc in procs.items():
        assert proc.returncode == 0 and proc.stdout == f"aevae-{name} {expected}\n", (name, proc)


def _completions(name: str, line: str) -> list[str]:
    env = {**os.environ, "COMP_LINE": line}
    proc = subprocess.run([*command(name), "-sc", "query=bash"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize("name", ["eval", "sample", "export"])
def test_tab_completion_offers_no_training_group(name: str) -> None:
    words = _completions(name, f"aevae-{name} ")
    assert "run_dir=" in words and "ckpt=" in words, words
    assert not [w for w in words if w.rstrip("=./") in TRAINING or w.startswith(("model", "loss"))], words
    assert "trainer=" in _completions("train", "aevae-train ")


def test_an_error_of_eval_is_one_line_printed_once() -> None:
    proc = run(*command("eval"))  # no checkpoint given
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).splitlines()
    assert lines == ["aevae-eval: error: give one of ckpt=CHECKPOINT or run_dir=RUN_DIR"]


def test_a_missing_extra_is_one_line_naming_it() -> None:
    with pytest.raises(UserError) as err:
        require("aevae_no_such_module", "mlflow", by="logger=mlflow", name="MLflow")
    assert str(err.value) == "logger=mlflow needs MLflow: pip install 'aevae[mlflow]'"
    assert require("json", "none", by="-").dumps([]) == "[]"
    # a plugin of an extra, as if not installed: aevae-train says which extra before Hydra looks
    script = (
        "import sys; sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None;"
        "sys.argv = ['aevae-train', '-m', 'hparams_search=optuna'];"
        "from aevae.commands.train import main; main()"
    )
    proc = run(sys.executable, "-c", script)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "aevae-train: error: hparams_search=optuna needs Hydra's Optuna sweeper: pip install 'aevae[optuna]'"
    ]
