"""The layout keeps its promises: model files hold math, callbacks hold callbacks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aevae"

#: What a model file may import besides the standard library: torch and torchmetrics, the model
#: bases, losses, metrics, nets, the config's errors (never Lightning, the engine or the commands).
MODEL_IMPORTS = (
    "torch",
    "torchmetrics",
    "aevae.config",
    "aevae.losses",
    "aevae.metrics",
    "aevae.models",
    "aevae.validation",
)
#: The model package's own plumbing: the LightningModule bases and checkpoint loading.
NOT_MODELS = {"__init__.py", "module.py", "checkpoint.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


STDLIB = {*sys.stdlib_module_names, "__future__"}
MODEL_FILES = sorted(p for p in (SRC / "models").glob("*.py") if p.name not in NOT_MODELS)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_a_model_file_imports_math_only(path: Path) -> None:
    allowed = tuple(f"{name}." for name in MODEL_IMPORTS)
    foreign = {
        m
        for m in imported_modules(path)
        if m not in MODEL_IMPORTS and not m.startswith(allowed) and m.split(".")[0] not in STDLIB
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}: a model file holds math only"


def test_the_check_sees_a_lightning_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import lightning as L\nfrom aevae.engine import internals\nimport torch\n")
    assert imported_modules(bad) == {"lightning", "aevae.engine", "torch"}


def test_callbacks_hold_callbacks_only() -> None:
    """Every public class of aevae.callbacks is a Lightning callback (the latent helpers they share
    with the commands live in aevae.sampling)."""
    import inspect

    import lightning as L

    import aevae.callbacks as callbacks

    for name in callbacks.__all__:
        value = getattr(callbacks, name)
        assert inspect.isclass(value) and issubclass(value, L.Callback), name


def test_only_callbacks_are_taken_from_the_callbacks_package() -> None:
    """What the commands, the evaluation and the API import from aevae.callbacks is callbacks
    (and the trackers' logger plumbing, which the run's loggers need): the pictures and latent
    helpers they share with the callbacks come from aevae.sampling."""
    import importlib
    import inspect

    import lightning as L

    taken = []
    for path in SRC.rglob("*.py"):
        if "callbacks" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aevae.callbacks"):
                taken += [(path.name, node.module, alias.name) for alias in node.names]
    assert taken, "the check found no import of aevae.callbacks at all"
    for where, module, name in taken:
        value = getattr(importlib.import_module(module), name)
        if inspect.ismodule(value):
            assert value.__name__ == "aevae.callbacks.trackers", f"{where} imports {module}.{name}"
        else:
            assert inspect.isclass(value) and issubclass(value, L.Callback), (
                f"{where} imports {module}.{name}"
            )
