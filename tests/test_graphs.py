"""Training steps replayed from a captured graph train exactly like eager steps.

Without a GPU, the plumbing around `torch.cuda.graph` (warm-up steps, static inputs,
capturing again when a baked-in value changes, eager short batches) runs against a
stand-in with the same contract: capturing records the step and runs nothing, a replay
runs the recorded step on the static inputs. With a GPU the real graphs are compared too.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
import torch

from aevae.engine import chunked, graphs
from test_chunked import fit, read_csv_metrics

#: An epoch of 19 full batches and a short one (1250 = 19 x 64 + 34), 20 steps per chunk.
SHORT_LAST = ("data.train_size=1250", "logger=csv", "trainer.limit_val_batches=0", "callbacks=none")
HALVING_LR = "model.scheduler={_target_:torch.optim.lr_scheduler.ExponentialLR,_partial_:true,gamma:0.5}"


class StandInGraphs(graphs.CudaGraphs):
    """CUDA graph semantics on the CPU, counting captures and replays."""

    captures = replays = 0

    @staticmethod
    def unavailable(device: torch.device) -> str | None:
        return None

    @staticmethod
    def make_capturable(optimizer: torch.optim.Optimizer) -> None:
        pass  # capturable optimizers need a GPU; the stand-in replays in Python anyway

    @staticmethod
    def side_stream():
        return contextlib.nullcontext()

    @classmethod
    def capture(cls, run):
        cls.captures += 1

        def replay():
            cls.replays += 1
            return run()

        return replay


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> type[StandInGraphs]:
    monkeypatch.setattr(chunked, "GRAPHS", StandInGraphs)
    StandInGraphs.captures = StandInGraphs.replays = 0
    return StandInGraphs


@pytest.mark.parametrize(
    "overrides,captures,replays",
    [
        # 3 epochs x 20 steps: 3 warm-up steps, 3 short batches run eagerly; the halved
        # learning rate is baked in, so each epoch captures again
        ((HALVING_LR, "trainer.max_epochs=3"), 3, 60 - 3 - 3),
        # the KL weight ramps over the first epoch: eager there, captured once it is constant
        (("model.kl_warmup_epochs=1", "trainer.max_epochs=2"), 1, 20 - 3 - 1),
    ],
)
def test_replayed_steps_train_exactly_like_eager_ones(
    tmp_path: Path, stand_in: type[StandInGraphs], overrides: tuple[str, ...], captures: int, replays: int
) -> None:
    common = (*SHORT_LAST, "model=vae", *overrides)
    eager = fit(tmp_path / "eager", *common, "cuda_graph=false")
    assert (stand_in.captures, stand_in.replays) == (0, 0)
    graphed = fit(tmp_path / "graphed", *common)
    assert (stand_in.captures, stand_in.replays) == (captures, replays)
    assert graphed.trainer.global_step == eager.trainer.global_step
    for g, e in zip(graphed.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert read_csv_metrics(tmp_path / "graphed") == read_csv_metrics(tmp_path / "eager")


@pytest.mark.parametrize(
    "overrides,reason",
    [
        (("trainer.gradient_clip_val=1.0",), "trainer.gradient_clip_val is set"),
        (
            ("model.optimizer._target_=torch.optim.SGD", "~model.optimizer.fused"),
            "SGD has no capturable mode",
        ),
    ],
)
def test_steps_that_cannot_be_captured_run_eagerly_and_say_why(
    tmp_path: Path, stand_in: type[StandInGraphs], caplog, overrides: tuple[str, ...], reason: str
) -> None:
    with caplog.at_level(logging.INFO, logger="aevae.engine.chunked"):
        fit(tmp_path, "logger=none", "callbacks=none", "trainer.max_steps=20", *overrides)
    assert stand_in.captures == 0
    assert f"training steps run eagerly, not as a CUDA graph: {reason}" in caplog.messages


def test_on_the_cpu_steps_run_eagerly_and_say_why(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="aevae.engine.chunked"):
        fit(tmp_path, "logger=none", "callbacks=none", "trainer.max_steps=20", "trainer.accelerator=cpu")
    assert "training steps run eagerly, not as a CUDA graph: the device is cpu, not a GPU" in caplog.messages


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: real CUDA graphs")
def test_cuda_graph_steps_match_eager_ones_on_a_gpu(tmp_path: Path) -> None:
    common = (*SHORT_LAST, "trainer.max_epochs=2", "trainer.accelerator=gpu", HALVING_LR)
    eager = fit(tmp_path / "eager", *common, "cuda_graph=false")
    graphed = fit(tmp_path / "graphed", *common)
    assert isinstance(graphed.model._graph, graphs.StepGraph) and graphed.model._graph.captures == 2
    for g, e in zip(graphed.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)  # the AE: no random draws
    vae = fit(tmp_path / "vae", *common, "model=vae", "trainer.log_every_n_steps=10")
    loss = [float(r["train/loss"]) for r in read_csv_metrics(tmp_path / "vae") if r.get("train/loss")]
    assert isinstance(vae.model._graph, graphs.StepGraph) and len(loss) == 4 and loss[-1] < loss[0]


def test_checkpoints_keep_the_optimizer_as_configured() -> None:
    """A captured step needs a capturable optimizer; a checkpoint saved with one would not
    resume on a CPU, so it is saved with the configured flag."""
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([weight], lr=1e-3)
    graph = graphs.StepGraph(lambda batch: batch, optimizer)  # the real CudaGraphs flips the flag
    assert optimizer.param_groups[0]["capturable"] is True
    saved = optimizer.state_dict()
    graph.as_configured([saved])
    assert saved["param_groups"][0]["capturable"] is False
    assert optimizer.param_groups[0]["capturable"] is True  # the live optimizer keeps it
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-3).load_state_dict(saved)


def test_a_failed_capture_falls_back_to_eager_steps(tmp_path: Path, stand_in, monkeypatch, caplog) -> None:
    def refuse(run):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(StandInGraphs, "capture", staticmethod(refuse))
    common = ("logger=none", "callbacks=none", "trainer.max_steps=40", "model=vae")
    eager = fit(tmp_path / "eager", *common, "cuda_graph=false")
    with caplog.at_level(logging.WARNING, logger="aevae.engine.graphs"):
        graphed = fit(tmp_path / "graphed", *common)
    assert graphed.model._graph.failed and graphed.trainer.global_step == 40
    assert [r.getMessage() for r in caplog.records if r.name == "aevae.engine.graphs"] == [
        "training steps run eagerly from here: capturing one failed "
        "(operation not permitted when stream is capturing)"
    ]
    for g, e in zip(graphed.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
