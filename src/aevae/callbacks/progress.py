"""Lightning's tqdm progress bar, counting optimizer steps, and readable in log files.

A training item of `aevae.engine.chunked` is a chunk of K batches, so Lightning's bar, which
counts items, would show 43/43 for an MNIST epoch of 860 steps. This bar counts steps.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from aevae.callbacks.tensorboard import positive_int
from aevae.config import UserError
from aevae.data.batches import count_images

#: In a log file a bar graphic is noise: the same fields, as text.
LINE_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
)


def interactive_stdout() -> bool:
    """Whether stdout redraws a bar in place: a terminal, or a notebook (tqdm's widgets)."""
    return sys.stdout.isatty() or "ipykernel" in sys.modules


class _Nowhere(io.TextIOBase):
    """Where a bar draws when nobody watches it redraw."""

    def write(self, text: str) -> int:
        return len(text)


def current(bar: Any) -> Tqdm | None:
    """The bar a `TQDMProgressBar` property returns, or None before it exists (it raises then)."""
    try:
        return bar()
    except TypeError:
        return None


def steps_in(chunk: Any) -> int:
    """Optimizer steps a training item holds: a chunk (list) of batches, or one batch."""
    return len(chunk) if isinstance(chunk, list) else 1


class StepProgressBar(TQDMProgressBar):
    """Lightning's `TQDMProgressBar` whose training bar counts optimizer steps (the epoch's
    steps as its total, advancing by each chunk's steps) and shows images/s; validation
    and test bars are Lightning's.

    On a terminal (or in a notebook) the bars redraw every `refresh_rate` steps. Where
    stdout is not interactive (a file, a pipe, CI or Slurm logs) redraws would pile up as
    carriage-return lines, so the bars print nothing themselves; instead a plain line with
    the same fields is printed every `every_n_seconds`, at the end of every epoch and of
    testing. `interactive` forces either mode (null: detect).
    """

    def __init__(
        self,
        refresh_rate: int = 20,
        every_n_seconds: float = 30.0,
        interactive: bool | None = None,
        process_position: int = 0,
        leave: bool = False,
    ) -> None:
        if refresh_rate != 0:  # 0 turns the bar off, as in Lightning
            positive_int("callbacks.progress_bar.refresh_rate", refresh_rate)
        seconds = every_n_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise UserError(f"callbacks.progress_bar.every_n_seconds={seconds!r} must be a number > 0")
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.every_n_seconds = float(every_n_seconds)
        self.interactive = interactive_stdout() if interactive is None else bool(interactive)
        self._last_line = time.monotonic()  # the first line comes `every_n_seconds` after the start
        self._epoch_start = self._epoch_last = time.perf_counter()
        self._epoch_images = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._last_line = time.monotonic()

    # -- counting steps ----------------------------------------------------------------
    def steps_per_item(self) -> int:
        """K, the optimizer steps of one training item (the datamodule's `steps_per_chunk`)."""
        return getattr(self.trainer.datamodule, "steps_per_chunk", 1) or 1

    @property
    def total_train_batches(self) -> int | float:
        """The epoch's optimizer steps (Lightning's count of training items times K)."""
        return super().total_train_batches * self.steps_per_item()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_start = self._epoch_last = time.perf_counter()
        self._epoch_images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_images += count_images(batch) * trainer.world_size
        self._epoch_last = time.perf_counter()  # images/s of the training part: validation excluded
        bar = current(lambda: self.train_progress_bar)
        if bar is None or not self.is_enabled:
            return
        before = batch_idx * self.steps_per_item()  # also right in an epoch resumed mid-way
        done = before + steps_in(batch)
        if bar.total is not None:
            done = min(done, bar.total)
        if not self.interactive:  # nothing is drawn: keep the count, print a line when one is due
            bar.n = done
            if self.line_due():
                bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
                self.print_line(bar, force=True)
        elif done // self.refresh_rate > before // self.refresh_rate or done == bar.total:
            bar.n = done
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Lightning's items, after the training throughput of this epoch so far."""
        items = super().get_metrics(trainer, pl_module)
        seconds = self._epoch_last - self._epoch_start
        if trainer.state.fn == "fit" and self._epoch_images and seconds > 0:
            return {"images/s": f"{self._epoch_images / seconds:,.0f}", **items}
        return items

    # -- bars that write to a terminal, or lines to a log ------------------------------
    def _tqdm(self, **kwargs: Any) -> Tqdm:
        """A bar as Lightning makes it; off a terminal it draws into nothing and
        `print_line` prints its state."""
        if self.interactive:
            return Tqdm(file=sys.stdout, dynamic_ncols=True, bar_format=self.BAR_FORMAT, **kwargs)
        return Tqdm(file=_Nowhere(), ncols=0, bar_format=LINE_FORMAT, **kwargs)

    def line_due(self) -> bool:
        return time.monotonic() - self._last_line >= self.every_n_seconds

    def print_line(self, bar: Tqdm | None, force: bool = False) -> None:
        """Off a terminal: the bar's state as one line, every `every_n_seconds` (or now)."""
        if self.interactive or bar is None or bar.disable or not self.is_enabled:
            return
        if force or self.line_due():
            self._last_line = time.monotonic()
            print(str(bar), file=sys.stdout, flush=True)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._tqdm(
            desc=self.sanity_check_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=False,
        )

    def init_train_tqdm(self) -> Tqdm:
        return self._tqdm(
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            smoothing=0,
            unit=" steps",
        )

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"  # no training bar under trainer.validate()
        return self._tqdm(
            desc=self.validation_description,
            position=2 * self.process_position + has_main_bar,
            disable=self.is_disabled,
            leave=not has_main_bar,
        )

    def init_test_tqdm(self) -> Tqdm:
        return self._tqdm(
            desc=self.test_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # after validation: the line has its metrics
        self.print_line(current(lambda: self.train_progress_bar), force=True)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_validation_batch_end(trainer, *args, **kwargs)
        self.print_line(current(lambda: self.val_progress_bar))

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_test_batch_end(trainer, *args, **kwargs)
        self.print_line(current(lambda: self.test_progress_bar))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.print_line(current(lambda: self.test_progress_bar), force=True)
        super().on_test_end(trainer, pl_module)
