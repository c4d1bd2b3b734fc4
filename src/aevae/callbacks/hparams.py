"""The run's hyper-parameters for every logger: TensorBoard's HParams dashboard (one table row per run
of a sweep), MLflow's params, W&B's config, the CSV logger's hparams.yaml."""

from __future__ import annotations

from typing import Any

import lightning as L

from aevae.callbacks import trackers
from aevae.callbacks.tensorboard import TensorBoardCallback
from aevae.engine import internals
from aevae.models import Autoencoder


def run_hparams(trainer: L.Trainer, pl_module: Autoencoder) -> dict[str, Any]:
    """What distinguishes runs of a sweep: model, latent_dim, loss, beta (VAE), lr, batch size,
    data set, seed. Read from the objects the run built, so it holds outside `aevae-train` too."""
    config = pl_module.run_config or {}
    datamodule = trainer.datamodule
    params = {
        "model": type(pl_module).__name__.lower(),
        "latent_dim": pl_module.latent_dim,
        "loss": type(pl_module.likelihood).__name__.lower(),
        "beta": getattr(pl_module, "beta", None),
        "lr": pl_module.lr,
        "batch_size": getattr(datamodule, "batch_size", None),
        "data": getattr(datamodule, "name", None),
        "seed": config.get("seed", getattr(datamodule, "seed", None)),
    }
    return {key: value for key, value in params.items() if value is not None}


class HParams(TensorBoardCallback):
    """The run's hyper-parameters (`run_hparams`) at the start of training: to every logger
    through Lightning's `log_hyperparams`, except TensorBoard, where the run becomes an HParams
    session (its hyper-parameters at the start, its success at the end of fit).

    The final `test/*` metrics reach every logger as metrics. The TensorBoard dashboard's metric
    columns are the scalars of the session's run, read when it is viewed, so the final `test/*`
    metrics that `aevae-train` logs after fitting land in the same row. No experiment summary is
    written (which is why Lightning's `log_hyperparams` is not used for TensorBoard): TensorBoard
    would take the first run's as the whole table's, and in an `-m model=ae,vae` sweep an AE
    run's summary has no beta and no ELBO columns. Without one, TensorBoard builds the table
    from all runs' sessions.
    """

    name = "hparams"

    def __init__(self) -> None:
        super().__init__(every_n_epochs=None)
        self._summaries: tuple[Any, Any] | None = None

    def reaches(self, logger: Any) -> bool:
        return True

    def on_train_start(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = run_hparams(trainer, pl_module)
        trackers.log_hparams(trainer, params)
        if (writer := self.writer(trainer)) is None:
            return
        _, start, end = hparams(params, {})
        internals.tensorboard_file_writer(writer).add_summary(start, trainer.global_step)
        self._summaries = (start, end)

    def on_train_end(self, trainer: L.Trainer, pl_module: Autoencoder) -> None:
        if self._summaries is not None and (writer := self.writer(trainer)) is not None:
            internals.tensorboard_file_writer(writer).add_summary(self._summaries[1], trainer.global_step)
