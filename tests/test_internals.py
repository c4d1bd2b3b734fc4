"""One test per reach into a library's private state (aevae.internals): each fails loudly, and
names what moved, when Lightning, TensorBoard or Hydra change what it relies on."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from aevae.engine import internals


class Steps(L.LightningModule):
    """Manual optimization that reports `per_call` optimizer steps per training_step, as a chunk does."""

    def __init__(self, per_call: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(2, 1)
        self.per_call = per_call
        self.seen: list[tuple[int, int, bool]] = []

    def training_step(self, batch, batch_idx):  # noqa: ANN001
        internals.count_optimizer_steps(self.trainer, self.per_call)

    def on_train_batch_start(self, batch, batch_idx):  # noqa: ANN001
        self.seen.append(
            (internals.batches_started(self.trainer), internals.batches_processed(self.trainer), False)
        )

    def on_train_batch_end(self, outputs, batch, batch_idx):  # noqa: ANN001
        self.seen[-1] = (*self.seen[-1][:2], internals.is_last_batch(self.trainer))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(6, 2), batch_size=2)


def fit(module: L.LightningModule, tmp_path: Path, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, **kwargs,
    )  # fmt: skip
    trainer.fit(module)
    return trainer


def test_count_optimizer_steps_moves_global_step_and_the_logging_step(tmp_path: Path) -> None:
    trainer = fit(Steps(per_call=5), tmp_path, max_epochs=2)
    assert trainer.global_step == 2 * 3 * 5  # 3 batches an epoch, 5 steps each
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 2 * 3 * 5


def test_max_steps_counts_the_reported_steps(tmp_path: Path) -> None:
    trainer = fit(Steps(per_call=5), tmp_path, max_steps=10)
    assert trainer.global_step == 10 and trainer.fit_loop.epoch_loop.batch_progress.current.processed == 2


def test_batch_counters_count_started_and_processed_batches(tmp_path: Path) -> None:
    module = Steps(per_call=1)
    fit(module, tmp_path, max_epochs=1)
    # at each batch's start: started (this one included), processed (before it), last at its end
    assert module.seen == [(1, 0, False), (2, 1, False), (3, 2, True)]


def test_model_checkpoint_keeps_its_step_interval_where_it_is_read() -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from aevae.engine.checkpointing import StepCheckpoint

    assert internals.every_n_train_steps(ModelCheckpoint(every_n_train_steps=7)) == 7
    assert internals.every_n_train_steps(StepCheckpoint("x", every_n_train_steps=3)) == 3
    assert internals.every_n_train_steps(L.Callback()) == 0


def test_the_ddp_launcher_takes_its_child_command_from_the_replaced_function(monkeypatch) -> None:
    import inspect

    from lightning.pytorch.strategies.launchers import subprocess_script

    assert callable(subprocess_script._hydra_subprocess_cmd), "Lightning renamed _hydra_subprocess_cmd"
    # the launcher must call it through the module, or replacing it would not reach the launcher
    assert "_hydra_subprocess_cmd(" in inspect.getsource(subprocess_script._SubprocessScriptLauncher)
    monkeypatch.setattr(subprocess_script, "_hydra_subprocess_cmd", subprocess_script._hydra_subprocess_cmd)
    command = lambda local_rank: (["x"], ".")  # noqa: E731
    internals.start_ddp_children_with(command)
    assert subprocess_script._hydra_subprocess_cmd is command


def test_summary_writer_has_an_event_file_writer(tmp_path: Path) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    internals.tensorboard_file_writer(writer).add_summary(
        Summary(value=[Summary.Value(tag="t", simple_value=1.0)]), 3
    )
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert [e.step for e in EventAccumulator(str(tmp_path)).Reload().Scalars("t")] == [3]


def test_hydras_basic_sweeper_is_where_multirun_yaml_names_it() -> None:
    sweeper = internals.basic_sweeper()
    assert f"{sweeper.__module__}.{sweeper.__qualname__}" == internals.BASIC_SWEEPER
    assert callable(sweeper.split_arguments) and callable(sweeper.split_overrides_to_chunks)


def test_hydra_config_is_set_and_restored() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from aevae.config import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", return_hydra_config=True)
    with open_dict(config):
        config.hydra.job.num = 4
    before = HydraConfig.instance().cfg
    with internals.hydra_config_as(config):
        assert HydraConfig.get().job.num == 4
    assert HydraConfig.instance().cfg is before


@pytest.mark.parametrize("module", ["lightning", "hydra"])
def test_the_pinned_versions_are_the_ones_installed(module: str) -> None:
    """pyproject's bounds on the libraries whose internals are used hold for what is installed."""
    import importlib.metadata
    import re

    from packaging.requirements import Requirement

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    name = {"lightning": "lightning", "hydra": "hydra-core"}[module]
    (spec,) = re.findall(rf'"({re.escape(name)}[<>=!~][^"]*)"', pyproject)
    requirement = Requirement(spec)
    assert "<" in str(requirement.specifier), f"{name} has no upper bound in pyproject.toml"
    assert importlib.metadata.version(name) in requirement.specifier
