"""K optimizer steps per Lightning `training_step`: the fast training path of every model.

For a model as small as the classic 784-128-32 MLP, Lightning's per-step work
(hooks, closures, its optimizer wrapper, `self.log`) costs as much as the
step's arithmetic. So the data arrive in *chunks* of K batches
(`TensorBatches(steps_per_chunk=K)`) and one `training_step` runs K plain
PyTorch steps on them. Lightning still counts optimizer steps, not chunks:
`trainer.global_step`, `max_steps`, the logging step and checkpoint-by-steps
see single updates. `configure_chunks` picks K so that every step-counted
interval and the epoch are whole numbers of chunks, and restates the
batch-counted Trainer limits (`limit_train_batches`, integer
`val_check_interval`) in chunks. On a GPU each of those steps is replayed from a
CUDA graph (`aevae.graphs`).
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from aevae.config import UserError
from aevae.engine import internals
from aevae.engine.graphs import CudaGraphs, StepGraph, baked_values, graph_unavailable
from aevae.metrics import RunningTerms

log = logging.getLogger(__name__)

#: Upper bounds on K: enough to amortize Lightning's per-call cost, small enough
#: that a chunk of float images stays a few tens of MB.
MAX_STEPS_PER_CHUNK = 64
MAX_IMAGES_PER_CHUNK = 16_384

#: How steps are captured and replayed (tests put an eager stand-in here).
GRAPHS: Any = CudaGraphs


def choose_steps_per_chunk(requested: int | str, intervals: dict[str, int], batch_size: int) -> int:
    """K: `requested` if it divides every positive interval, or for "auto" the largest such K."""
    positive = {key: value for key, value in intervals.items() if value > 0}
    if requested == "auto":
        common = math.gcd(*positive.values()) if positive else 0
        cap = max(1, min(MAX_STEPS_PER_CHUNK, MAX_IMAGES_PER_CHUNK // batch_size))
        return max(d for d in range(1, cap + 1) if common % d == 0) if common else cap
    k = _positive_int("steps_per_chunk", requested)
    for key, value in positive.items():
        if value % k:
            raise UserError(f"steps_per_chunk={k} must divide {key}={value}; use steps_per_chunk=auto")
    return k


def configure_chunks(trainer: L.Trainer, datamodule: Any, requested: int | str) -> int:
    """Pick K for this trainer and data, and make Lightning count chunks where it counts batches."""
    if trainer.accumulate_grad_batches != 1:
        raise UserError("trainer.accumulate_grad_batches is not supported; raise data.batch_size instead")
    if str(trainer.precision) in ("16", "16-mixed"):
        raise UserError(
            f"trainer.precision={trainer.precision} needs loss scaling; use bf16-mixed or 32-true"
        )
    intervals = {
        "trainer.log_every_n_steps": trainer.log_every_n_steps,
        "trainer.max_steps": trainer.max_steps,
    }
    for callback in trainer.callbacks:
        if every := internals.every_n_train_steps(callback):
            intervals[f"{type(callback).__name__}.every_n_train_steps"] = every
    batch_counted = {
        key: value
        for key in ("limit_train_batches", "val_check_interval")
        if isinstance(value := getattr(trainer, key), int) and not isinstance(value, bool)
    }
    intervals.update({f"trainer.{key}": value for key, value in batch_counted.items()})
    epoch = datamodule.train_batches_per_epoch(trainer.world_size)
    if not 0 < batch_counted.get("limit_train_batches", epoch) < epoch:  # else the limit ends each epoch
        intervals["the batches of an epoch"] = epoch
    k = choose_steps_per_chunk(requested, intervals, datamodule.batch_size)
    for key, value in batch_counted.items():
        setattr(trainer, key, value // k)
    datamodule.steps_per_chunk = k
    if k > 1:  # Lightning compares its batch count, now chunks, with log_every_n_steps, still steps
        warnings.filterwarnings(
            "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
        )
    log.info(
        "%d optimizer step(s) per training_step (steps_per_chunk=%s; intervals: %s)", k, requested, intervals
    )
    return k


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}={value!r} must be a positive integer or auto")
    return value


class ChunkedTraining(L.LightningModule):
    """Manual optimization over chunks of batches; subclasses define `terms(x)`, or
    `batch_terms(batch)` when they learn from more than the inputs (labels, clean targets)."""

    #: Per-image loss terms `terms` returns; "loss" (first) is what training minimizes.
    term_names: tuple[str, ...] = ("loss",)

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gradient_clip_val: float | None = None
        self.gradient_clip_algorithm = "norm"
        self._running = RunningTerms(len(self.term_names))
        self._rng_to_restore: dict[str, Any] | None = None
        self._distributed = False  # set at train start
        self._unchecked: tuple[Tensor, int] | None = None  # a chunk's losses and its first step
        #: Capture each training step as a CUDA graph where that is possible (aevae.graphs).
        self.cuda_graph = True
        self._graph: StepGraph | bool | None = None  # False: eager steps, decided at the first step
        #: The stop signal received, 0 if none (`aevae.engine.signals.StopOnSignal.requested`).
        self.stop_requested: Callable[[], int] = _never
        self._steps_into_chunk = 0  # steps of the current chunk done when a signal stopped training
        self._resume_inside_chunk = 0  # ... and those to skip of the first chunk after resuming there

    def terms(self, x: Tensor) -> dict[str, Tensor]:
        """Per-image loss terms `[B]`, keyed by `term_names`."""
        raise NotImplementedError

    def batch_terms(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """The terms of one batch `(inputs, labels[, targets])`: by default `terms(inputs)`."""
        return self.terms(batch[0])

    def after_step(self) -> None:
        """Called after every optimizer step, inside it (and inside its CUDA graph): updates of
        buffers that gradients do not train."""

    def training_step(self, chunk: list[Sequence[Tensor]] | Sequence[Tensor], chunk_idx: int) -> None:
        batches = chunk if isinstance(chunk, list) else [chunk]
        skipped, self._resume_inside_chunk = self._resume_inside_chunk, 0  # a run stopped inside this chunk
        batches = batches[skipped:]
        if self.trainer.max_steps >= 0:  # stop exactly at max_steps, also inside a chunk
            batches = batches[: max(self.trainer.max_steps - self.global_step, 0)]
        self._check_finite()  # the previous chunk's losses: the device has finished it by now
        optimizer = self.optimizers().optimizer  # the torch optimizer; its wrapper costs a step's worth
        graph = self._step_graph(optimizer)
        values = None if graph is None else self.graph_values()  # None: this chunk runs eagerly
        if values is not None:
            values = baked_values(optimizer, values)  # schedulers and hooks change them between chunks
        losses = []
        for batch in batches:
            if not self._distributed and self.stop_requested():  # a Python flag: no device sync
                break
            if values is None:
                loss, terms = self._step(batch, optimizer)
            else:
                loss, terms = graph(batch, values)  # type: ignore[misc]
            losses.append(loss)
            self._running.add(terms)
        stop = 0 if self._distributed else self.stop_requested()
        if losses:
            self._unchecked = (torch.stack(losses), self.global_step)
            ends = self.trainer.max_steps >= 0 and self.global_step + len(losses) >= self.trainer.max_steps
            if self._distributed:  # NaNs and stop requests: one all-reduce a chunk, agreed by all ranks
                stop = self._check_finite(stop=self.stop_requested())
            elif ends or chunk_idx + 1 >= self.trainer.num_training_batches:
                self._check_finite()  # before epoch-end callbacks read the weights
        self._count_optimizer_steps(len(losses))
        if stop:
            self._stop_inside_chunk(stop, skipped + len(losses))
        every = self.trainer.log_every_n_steps
        if every > 0 and self.global_step % every == 0:
            self._log_train_interval()

    def _stop_inside_chunk(self, signum: int, steps_done: int) -> None:
        """Stop after `steps_done` steps of this chunk. The checkpoint (`StopOnSignal.on_exception`)
        is taken before Lightning counts the chunk as processed, so a resumed run starts this chunk
        again, skipping the steps done (`aevae_steps_into_chunk`): the same batches, binarization
        and noise as an uninterrupted run, which are drawn per chunk."""
        from aevae.engine.signals import Stopped

        self._steps_into_chunk = steps_done
        raise Stopped(signum, self.global_step)

    def _step(self, batch: Sequence[Tensor], optimizer: torch.optim.Optimizer) -> tuple[Tensor, Tensor]:
        """One optimizer update on one batch: its mean loss and per-image terms `[n_terms, B]`."""
        terms = self.batch_terms(batch)
        loss = terms["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self._distributed:
            self._average_gradients()
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
        optimizer.step()
        self.after_step()
        return loss.detach(), torch.stack([terms[name].detach() for name in self.term_names])

    # -- the step as one CUDA graph (aevae.graphs) ----------------------------------------
    def graph_values(self) -> tuple[Any, ...] | None:
        """The Python values `terms` reads that may change during training (a captured step
        is captured again when they do), or None while they change every step."""
        return ()

    def _step_graph(self, optimizer: torch.optim.Optimizer) -> StepGraph | None:
        if self._graph is None:
            reason = "cuda_graph=false" if not self.cuda_graph else graph_unavailable(self, optimizer, GRAPHS)
            step = partial(self._step, optimizer=optimizer)
            self._graph = False if reason else StepGraph(step, optimizer, GRAPHS)
            if reason and self.cuda_graph:
                log.info("training steps run eagerly, not as a CUDA graph: %s", reason)
            elif not reason:
                log.info("training steps are captured as a CUDA graph (cuda_graph=true)")
        return self._graph or None

    # -- what Lightning's optimizer wrapper and DDP reducer would have done ------------
    def _count_optimizer_steps(self, n: int) -> None:
        """Make Lightning count `n` optimizer steps for this chunk (aevae.engine.internals says how)."""
        internals.count_optimizer_steps(self.trainer, n)

    def training_progress(self) -> float:
        """Epochs of training done so far, fractional, counted in chunks started (a warm-up's
        clock): the same after a resume mid-epoch as in an uninterrupted run."""
        done = internals.batches_started(self.trainer) - 1
        return self.current_epoch + done / max(self.trainer.num_training_batches, 1)

    def on_train_start(self) -> None:
        """Under DDP, several backward passes in one DDP forward would break its reducer:
        switch it off and average gradients per step in `_average_gradients` instead."""
        self._restore_rng()
        self._steps_into_chunk = 0  # a stop of an earlier fit of this model is not this fit's
        self._graph = None  # decided again for this fit's optimizer at its first step
        self._distributed = self.trainer.world_size > 1
        wrapper = self.trainer.strategy.model
        if isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
            wrapper.require_backward_grad_sync = False

    def _average_gradients(self) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat.div_(self.trainer.world_size)
        for grad, averaged in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(averaged.view_as(grad))

    # -- guards and state a resumed run needs ------------------------------------------
    def _check_finite(self, stop: int = 0) -> int:
        """Stop at a NaN/Inf loss before anything saves the damaged weights.

        Reading the losses waits for the device. Done at the next chunk's start (or before a
        checkpoint, a validation, the epoch's end), the device has long finished them, and the
        host never holds up a GPU between chunks; under DDP every chunk is checked at its end.
        """
        if self._unchecked is None:
            return stop
        losses, first_step = self._unchecked
        self._unchecked = None
        return self._stop_if_not_finite(losses, first_step, stop)

    def _stop_if_not_finite(self, losses: Tensor, first_step: int, stop: int = 0) -> int:
        """Raise on a non-finite loss; under DDP also agree on `stop` (a signal number, 0: none),
        returned as the largest any rank asked for."""
        finite = torch.isfinite(losses).all()
        if self.trainer.world_size > 1:  # every rank stops together, or none does
            flags = torch.stack([(~finite).to(torch.int64), torch.tensor(stop, device=finite.device)])
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            nonfinite, stop = flags.tolist()  # the chunk's one host read
            if not nonfinite:
                return stop
        elif bool(finite):
            return stop
        bad = (~torch.isfinite(losses)).nonzero()
        first = int(bad[0]) if len(bad) else 0  # another rank's loss may be the bad one
        raise NonFiniteLossError(
            f"non-finite loss ({losses[first].item()}) at optimizer step {first_step + first + 1}: "
            f"training stopped; {_last_checkpoint(self.trainer)}; "
            "lower model.lr or set trainer.gradient_clip_val"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite()
        checkpoint["aevae_train_terms"] = self._running.state_dict()
        checkpoint["aevae_steps_into_chunk"] = self._steps_into_chunk
        if isinstance(self._graph, StepGraph):
            self._graph.as_configured(checkpoint.get("optimizer_states", []))
        checkpoint["aevae_rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["aevae_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "aevae_train_terms" in checkpoint:
            self._running.load_state_dict(checkpoint["aevae_train_terms"])
        self._rng_to_restore = checkpoint.get("aevae_rng")  # applied when training restarts
        self._resume_inside_chunk = checkpoint.get("aevae_steps_into_chunk", 0)

    def _restore_rng(self) -> None:
        """Continue the reparameterization noise where the checkpoint left it. Done at train
        start, after the sanity check, so a resumed run draws exactly what the original did."""
        if (state := self._rng_to_restore) is None:
            return
        torch.set_rng_state(state["torch"])
        random.setstate(_as_tuples(state["python"]))
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._rng_to_restore = None

    # -- logging: reduced on the device once per interval, never per step --------------
    def _log_train_interval(self) -> None:
        """Hand the interval's means to the loggers directly, at the step Lightning would use.

        Through `self.log`, each interval cost a few `self.log` calls plus a flush of
        every logger (~1.5 ms, several % of the default run); rank-local step metrics
        need none of its aggregation. The progress bar still gets `train/loss`.
        """
        if (means := self._running.take_interval()) is None:
            return
        self.log("train/loss", means[0], prog_bar=True, logger=False)
        metrics = {
            f"train/{name}": value for name, value in zip(self.term_names, means.tolist(), strict=True)
        }
        for logger in self.loggers:
            logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=self.global_step - 1)

    def on_train_epoch_start(self) -> None:
        self._running = RunningTerms(len(self.term_names))

    def on_validation_start(self) -> None:
        self._check_finite()

    def on_train_end(self) -> None:
        self._check_finite()

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        schedulers = self.lr_schedulers()  # manual optimization: stepping them is ours
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()
        if (means := self._running.take_epoch()) is not None:
            named = zip(self.term_names, means, strict=True)
            self.log_dict({f"train/{name}_epoch": value for name, value in named}, sync_dist=True)


def _never() -> int:
    """No stop requested (a model trained outside `aevae-train`)."""
    return 0


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss."""


def _last_checkpoint(trainer: L.Trainer) -> str:
    dirs = {Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
    saved = sorted((p for d in dirs for p in d.glob("*.ckpt")), key=lambda p: p.stat().st_mtime)
    if not saved:
        return "no checkpoint was saved before it"
    step = torch.load(saved[-1], map_location="cpu", weights_only=True).get("global_step")
    return f"the last good checkpoint is {saved[-1]} (step {step})"


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the tuples that a checkpoint round trip may turn into lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value
