"""The whole training step (forward, backward, optimizer) captured once as a CUDA graph.

At the tutorial's size a step is a few dozen tiny kernels, each cheaper than its launch
from Python; replaying them as one graph takes the host out of the loop. This follows
PyTorch's whole-network capture recipe (`torch.cuda.graph`, optimizer with
`capturable=True`). `torch.compile(mode="reduce-overhead")` would graph the forward,
the backward and the optimizer as separate pieces, with Python in between.

A captured step has baked in every Python value it read: learning rates, the KL weight,
the batch shapes. `StepGraph` is therefore told those values each time and captures again
when they change (an epoch-wise LR schedule: once per epoch); a batch of another shape (an
epoch's short last batch) runs eagerly. Where capture cannot work at all (not a GPU,
several processes, clipping, mixed precision, an optimizer without `capturable`) training
stays eager, with one log line saying why.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: A training step: batch -> (mean loss, per-image terms `[n_terms, B]`), both detached.
Step = Callable[[Sequence[Tensor]], tuple[Tensor, Tensor]]

#: Eager steps (real ones, counted) on a side stream before the first capture, as the
#: recipe asks: they create the optimizer state and let cuBLAS/cuDNN set up outside capture.
WARMUP_STEPS = 3


class CudaGraphs:
    """The torch.cuda calls `StepGraph` makes; tests substitute an eager stand-in."""

    @staticmethod
    def unavailable(device: torch.device) -> str | None:
        return None if device.type == "cuda" else f"the device is {device.type}, not a GPU"

    @staticmethod
    def make_capturable(optimizer: torch.optim.Optimizer) -> None:
        """Keep the optimizer's step counts on the GPU, so that its update needs no host value."""
        for group in optimizer.param_groups:
            group["capturable"] = True
        for param, state in optimizer.state.items():  # a resumed run's state may sit on the CPU
            if torch.is_tensor(step := state.get("step")):
                state["step"] = step.to(param.device)
        warnings.filterwarnings("ignore", message=r".*capturable=True.*without (CUDA|XPU) graph capture")

    @staticmethod
    @contextlib.contextmanager
    def side_stream() -> Iterator[None]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream().wait_stream(stream)

    @staticmethod
    def capture(run: Callable[[], Any]) -> Callable[[], Any]:
        """Record `run` (without executing it); the returned function replays it and returns
        the same output tensors, refilled."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = run()

        def replay() -> Any:
            graph.replay()
            return outputs

        return replay


def graph_unavailable(module: Any, optimizer: torch.optim.Optimizer, backend: Any = CudaGraphs) -> str | None:
    """Why the steps of `module` (a ChunkedTraining) cannot be captured, or None if they can."""
    trainer = module.trainer
    if reason := backend.unavailable(trainer.strategy.root_device):
        return reason
    if trainer.world_size > 1:
        return "several processes average gradients between each step's backward and update"
    if module.gradient_clip_val:
        return "trainer.gradient_clip_val is set"
    if str(trainer.precision) != "32-true":
        return f"trainer.precision={trainer.precision} (captured steps run in 32-true only)"
    if "capturable" not in optimizer.defaults:
        return f"{type(optimizer).__name__} has no capturable mode"
    return None


def baked_values(optimizer: torch.optim.Optimizer, model_values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The Python values a captured step reads: the model's and each param group's scalars."""
    groups = tuple(
        tuple((k, v) for k, v in group.items() if k != "params" and not torch.is_tensor(v))
        for group in optimizer.param_groups
    )
    return model_values, groups


class StepGraph:
    """Runs `step` on batches: eagerly for the warm-up, then by replaying a captured graph."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, backend: Any = CudaGraphs) -> None:
        self.step, self.optimizer, self.backend = step, optimizer, backend
        self.configured = [group.get("capturable", False) for group in optimizer.param_groups]
        backend.make_capturable(optimizer)
        self.warmup_left = WARMUP_STEPS
        self.replay: Callable[[], tuple[Tensor, Tensor]] | None = None
        self.inputs: list[Tensor] = []
        self.shapes: tuple[Any, ...] | None = None  # of the batches captured; others run eagerly
        self.values: tuple[Any, ...] | None = None
        self.captures = 0
        self.failed = False

    def __call__(self, batch: Sequence[Tensor], values: tuple[Any, ...]) -> tuple[Tensor, Tensor]:
        if self.warmup_left:
            self.warmup_left -= 1
            with self.backend.side_stream():
                return self.step(batch)
        shapes = tuple((t.shape, t.dtype, t.device) for t in batch)
        if self.failed or (self.shapes is not None and shapes != self.shapes):
            return self.step(batch)
        if self.replay is None or values != self.values:
            try:
                self._capture(batch, shapes, values)
            except RuntimeError as err:  # capture records and runs nothing: the step can still run
                self.failed, self.replay = True, None
                reason = _first_line(err)
                log.warning("training steps run eagerly from here: capturing one failed (%s)", reason)
                return self.step(batch)
        for static, new in zip(self.inputs, batch, strict=True):
            static.copy_(new)
        loss, terms = self.replay()  # type: ignore[misc]
        return loss.clone(), terms.clone()  # the graph refills its outputs at the next replay

    def _capture(self, batch: Sequence[Tensor], shapes: tuple[Any, ...], values: tuple[Any, ...]) -> None:
        self.replay = None  # the previous graph and its memory go first
        self.optimizer.zero_grad(set_to_none=True)  # gradients are allocated by the graph
        self.inputs = [t.clone() for t in batch]
        self.replay = self.backend.capture(lambda: self.step(self.inputs))
        self.shapes, self.values = shapes, values
        self.captures += 1

    def as_configured(self, optimizer_states: list[dict[str, Any]]) -> None:
        """Save the optimizer as it was configured: a capturable one would not resume on a CPU."""
        for state in optimizer_states:
            for group, capturable in zip(state["param_groups"], self.configured, strict=True):
                group["capturable"] = capturable


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
