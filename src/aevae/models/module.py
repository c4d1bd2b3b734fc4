"""What every aevae model shares around its training steps: optimizer, val/test metrics, checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torch import Tensor, nn

from aevae.engine.chunked import ChunkedTraining
from aevae.rng import keyed_generator

EVAL_STAGES = ("val", "test")


class Model(ChunkedTraining):
    """Base LightningModule of the autoencoders and the classifier.

    A subclass passes its metrics (name -> factory; one instance per stage) and
    implements `evaluate(batch)`, which returns the value (or tuple of arguments)
    to update each metric with; they are logged as `<stage>/<name>` at the end of every val/test epoch.
    The run's resolved config travels in checkpoints, so `load_checkpoint` can
    rebuild the model from the file alone.
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float,
        metrics: dict[str, Callable[[], torchmetrics.Metric]],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory, self.lr = optimizer, float(lr)
        self.scheduler_factory = scheduler  # stepped once per epoch
        self.eval_metrics = nn.ModuleDict(
            {stage: nn.ModuleDict({n: make() for n, make in metrics.items()}) for stage in EVAL_STAGES}
        )
        #: The run's resolved config, stored in checkpoints as plain containers.
        self.run_config: dict[str, Any] | None = None
        #: Seeds the noise of validation and test (the run's `seed`; aevae.commands.train sets it).
        self.eval_seed = 0

    def evaluate(self, batch: Sequence[Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """The update of each metric (by name) for one val/test batch; any noise it needs
        (posterior draws) comes from `generator`."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters(), lr=self.lr)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    def eval_generator(self, stage: str, batch_idx: int, dataloader_idx: int = 0) -> torch.Generator:
        """The noise of one val/test batch, seeded by the run's seed and the batch's place alone.

        Not the global RNG: the same weights then give bit-identical metrics whatever ran
        before (a resumed run re-testing, a second `trainer.test`), and evaluation leaves
        training's random stream where it was. The epoch is left out on purpose: every
        validation draws the same noise, so epochs (and checkpoints) compare on equal terms.
        """
        place = (self.eval_seed, EVAL_STAGES.index(stage), dataloader_idx, batch_idx, self.global_rank)
        return keyed_generator(place, self.device)

    def _update(self, batch: Sequence[Tensor], stage: str, batch_idx: int, dataloader_idx: int = 0) -> None:
        values = self.evaluate(batch, self.eval_generator(stage, batch_idx, dataloader_idx))
        for name, metric in self.eval_metrics[stage].items():
            args = values[name]
            metric.update(*(args if isinstance(args, tuple) else (args,)))

    def _log_eval(self, stage: str) -> None:
        metrics = self.eval_metrics[stage]
        self.log_dict({f"{stage}/{n}": m.compute() for n, m in metrics.items()}, prog_bar=stage == "val")
        for metric in metrics.values():
            metric.reset()

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(batch, "val", batch_idx, dataloader_idx)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(batch, "test", batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: str | torch.device | None = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """The model of an aevae checkpoint, in eval mode, rebuilt from the run config it holds.

        Lightning's own version rebuilds from `hparams`, which leave out the networks, the
        likelihood and the optimizer (config objects, not values); the run config has them all.
        `kwargs` replace constructor arguments, as in Lightning (e.g. `beta=4`). A checkpoint of
        another model class is refused with one line. The file is always read with
        `weights_only=True` (nothing in it runs), so `weights_only` changes nothing.
        """
        from aevae.config import UserError
        from aevae.models.checkpoint import load_checkpoint

        if hparams_file is not None:
            raise UserError("hparams_file is not used: an aevae checkpoint holds its whole config")

        return load_checkpoint(
            checkpoint_path,
            map_location=map_location or "cpu",
            expect=cls,
            overrides=kwargs,
            strict=True if strict is None else strict,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.run_config is not None:
            checkpoint["aevae_config"] = self.run_config
