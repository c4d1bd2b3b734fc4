"""`aevae-train`: compose the config, build everything with Hydra, fit, test.

aevae-train model=vae latent_dim=8 trainer.max_epochs=3
aevae-train -m model=ae,vae latent_dim=2,8,32
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aevae.config import CONFIG_DIR, UserError, user_error
from aevae.validation import validate

log = logging.getLogger("aevae.train")


@dataclass
class Run:
    """Everything one training run is made of, built from its config."""

    datamodule: Any
    model: Any
    trainer: Any
    ckpt_path: str | None = None  # to start from, "last" resolved


def _tidy_library_output() -> None:
    """Lightning prints through its own console handler *and* the root logger that Hydra
    set up (console + train.log), so every line came twice; keep the root's. Drop its
    advertisement line, a deprecation warning it raises under newer torch, and its
    warning that step checkpoints of manual optimization hold the weights *after* the
    step: that is what a checkpoint at global_step N must hold (N updates applied)."""
    lightning_log = logging.getLogger("lightning")
    for handler in list(lightning_log.handlers):
        if type(handler) is logging.StreamHandler and logging.getLogger().handlers:
            lightning_log.removeHandler(handler)
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero_log.addFilter(lambda record: not str(record.msg).startswith("💡 Tip"))
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings(
        "ignore", message="Using ModelCheckpoint with manual optimization and every_n_train"
    )


def build(cfg: DictConfig) -> Run:
    """Validate, seed, then instantiate data, model, callbacks, loggers and trainer from `cfg`."""
    validate(cfg)  # before anything heavy is imported or built

    import lightning as L
    from hydra.utils import instantiate

    from aevae.checkpointing import LAST, check_compatible, peek
    from aevae.chunked import configure_chunks

    _tidy_library_output()

    L.seed_everything(cfg.seed, workers=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    resume_step = None
    if ckpt_path := cfg.get("ckpt_path"):
        if ckpt_path == "last":  # the run dir's own, as after a crash with hydra.run.dir=RUN_DIR
            ckpt_path = str(Path(cfg.paths.output_dir) / "checkpoints" / LAST)
        checkpoint = peek(ckpt_path, key="ckpt_path")
        check_compatible(checkpoint, model_cfg, ckpt_path)
        resume_step = checkpoint.get("global_step")
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _convert_="all")
    if tuple(model.image_shape) != tuple(datamodule.image_shape):
        raise UserError(
            f"model.image_shape={list(model.image_shape)} does not fit data={cfg.data.name}, "
            f"whose images are {list(datamodule.image_shape)}"
        )
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    # Clipping happens inside the chunked steps (manual optimization), not in Lightning's loop.
    model.gradient_clip_val = cfg.trainer.get("gradient_clip_val")
    model.gradient_clip_algorithm = cfg.trainer.get("gradient_clip_algorithm") or "norm"
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [
        instantiate(c, **_resumed_logger_kwargs(c, resume_step)) for c in (cfg.get("logger") or {}).values()
    ]
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        gradient_clip_val=None,
        gradient_clip_algorithm=None,
    )
    configure_chunks(trainer, datamodule, cfg.get("steps_per_chunk", "auto"))
    if trainer.strategy.root_device.type != "cuda":
        # Lightning turns on torch's NVML-based CUDA probe (to keep fork-based launchers
        # usable), which Adam.step() then runs on every step: ~35 us of ctypes calls
        # per step on a machine with a CUDA build and no GPU. Nothing here forks CUDA.
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    return Run(datamodule, model, trainer, ckpt_path)


def _resumed_logger_kwargs(logger_cfg: DictConfig, resume_step: int | None) -> dict[str, Any]:
    """A resumed run re-logs the steps after its checkpoint: TensorBoard's `purge_step`
    hides what the killed run had logged from there on, so no step appears twice."""
    if resume_step is None or not str(logger_cfg.get("_target_", "")).endswith("TensorBoardLogger"):
        return {}
    return {"purge_step": resume_step}


def _model_checkpoint(trainer: Any) -> Any:
    from lightning.pytorch.callbacks import ModelCheckpoint

    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit `cfg.model` on `cfg.data`, test the best checkpoint, write metrics.json."""
    run = build(cfg)
    trainer = run.trainer
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (output_dir / ERROR_FILE).unlink(missing_ok=True)  # from an earlier, failed attempt

    trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)

    metrics: dict[str, float] = {}
    if cfg.get("test"):
        best = getattr(_model_checkpoint(trainer), "best_model_path", "")
        trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best or None, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if trainer.is_global_zero:
            (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            log.info("test metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics


#: A failed run leaves its error here, in its run dir.
ERROR_FILE = "error.txt"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _task(cfg: DictConfig) -> Any:
    try:
        return train(cfg)
    except Exception as err:  # a mistake in the user's input gets one line, not a traceback
        message = user_error(err)
        _write_error(message or traceback.format_exc())
        if message is None:
            raise
        log.error(message)
        print(f"aevae-train: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _write_error(text: str) -> None:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(text.rstrip() + "\n")


def main() -> Any:
    """The `aevae-train` command. `resume=RUN_DIR` continues that run: its own overrides,
    its run dir and its last checkpoint, with any other overrides given on top."""
    args = sys.argv[1:]
    resume = [a for a in args if a.startswith("resume=")]
    if resume:
        from aevae.checkpointing import resume_overrides

        others = [a for a in args if not a.startswith("resume=")]
        try:
            sys.argv = [sys.argv[0], *resume_overrides(resume[-1].split("=", 1)[1], others), resume[-1]]
        except UserError as err:
            print(f"aevae-train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    return _task()


if __name__ == "__main__":
    main()
