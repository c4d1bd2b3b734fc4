"""`aevae-train`: compose the config, build everything with Hydra, fit, test.

aevae-train model=vae latent_dim=8 trainer.max_epochs=3
aevae-train -m model=ae,vae latent_dim=2,8,32
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aevae.commands.cli import answer_version
from aevae.config import CONFIG_DIR, UserError, one_line_errors, quote_paths, user_error
from aevae.files import DiskError, write_text  # also registers ${aevae.new_dir:...} of conf/hydra
from aevae.validation import validate

log = logging.getLogger("aevae.train")


@dataclass
class Run:
    """Everything one training run is made of, built from its config."""

    datamodule: Any
    model: Any
    trainer: Any
    ckpt_path: str | None = None  # to start from, "last" resolved
    stopper: Any = None  # aevae.engine.signals.StopOnSignal: signals stop training at an optimizer step


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

    from aevae.callbacks import trackers
    from aevae.engine.checkpointing import LAST, check_compatible, peek
    from aevae.engine.chunked import configure_chunks
    from aevae.engine.signals import StopOnSignal, continue_requeued

    _tidy_library_output()
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        from aevae.engine.distributed import start_children_with_job_command

        start_children_with_job_command()

    L.seed_everything(cfg.seed, workers=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    resume_step = None
    if ckpt_path := cfg.get("ckpt_path") or continue_requeued(cfg.paths.output_dir):
        if ckpt_path == "last":  # the run dir's own, as after a crash with hydra.run.dir=RUN_DIR
            ckpt_path = str(Path(cfg.paths.output_dir) / "checkpoints" / LAST)
        checkpoint = peek(ckpt_path, key="ckpt_path")
        check_compatible(checkpoint, model_cfg, ckpt_path)
        resume_step = checkpoint.get("global_step")
    for key, logger_cfg in (cfg.get("logger") or {}).items():
        trackers.prepare(key, logger_cfg)  # a missing tracker package: one line, before any data
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _convert_="all")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    model.eval_seed = cfg.seed  # validation and test noise: seeded per batch, not the global RNG
    # Clipping happens inside the chunked steps (manual optimization), not in Lightning's loop.
    model.gradient_clip_val = cfg.trainer.get("gradient_clip_val")
    model.gradient_clip_algorithm = cfg.trainer.get("gradient_clip_algorithm") or "norm"
    model.cuda_graph = cfg.get("cuda_graph", True)
    stopper = StopOnSignal(Path(cfg.paths.output_dir) / "checkpoints" / LAST)
    model.stop_requested = stopper.requested
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + [stopper]
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
    _check_precision(trainer)
    global_batch = datamodule.set_world_size(trainer.world_size)
    log.info(
        "global batch %d = %d per process x %d process(es); model.lr=%g applies to it",
        global_batch,
        datamodule.batch_size,
        trainer.world_size,
        model.lr,
    )
    configure_chunks(trainer, datamodule, cfg.get("steps_per_chunk", "auto"))
    if trainer.strategy.root_device.type != "cuda":
        # Lightning turns on torch's NVML-based CUDA probe (to keep fork-based launchers
        # usable), which Adam.step() then runs on every step: ~35 us of ctypes calls
        # per step on a machine with a CUDA build and no GPU. Nothing here forks CUDA.
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    return Run(datamodule, model, trainer, ckpt_path, stopper)


def _check_precision(trainer: Any) -> None:
    import torch

    device = trainer.strategy.root_device
    if "bf16" in str(trainer.precision) and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"trainer.precision={trainer.precision} is not allowed: {torch.cuda.get_device_name(device)} "
            "has no bfloat16 support (use 32-true)"
        )


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
    """Fit `cfg.model` on `cfg.data`, test the best checkpoint, write metrics.json: the test
    metrics and the best `val/loss` (the checkpoint monitor; the objective of sweeps)."""
    run = build(cfg)
    trainer = run.trainer
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        (output_dir / ERROR_FILE).unlink(missing_ok=True)  # from an earlier, failed attempt

    with run.stopper.installed(trainer):
        trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
        run.stopper.raise_if_requested(trainer)  # a signal after the last step: training is complete
        checkpointing = _model_checkpoint(trainer)
        metrics = (
            {"val/loss": float(v)} if (v := trainer.callback_metrics.get("val/loss")) is not None else {}
        )
        if checkpointing is not None and checkpointing.best_model_score is not None:
            metrics[checkpointing.monitor] = float(checkpointing.best_model_score)  # the best epoch's
        if cfg.get("test"):
            best = getattr(checkpointing, "best_model_path", "")
            trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best or None, weights_only=True)
            metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if trainer.is_global_zero and (seconds := _epoch_seconds(trainer)):  # not in metrics.json: a
        # resumed run's metrics equal the uninterrupted run's, its timing does not
        write_text(output_dir / "timing.json", json.dumps({"perf/train_epoch_s": seconds}) + "\n")
    log.info("metrics (rank %d): %s", trainer.global_rank, json.dumps(metrics, sort_keys=True))
    if cfg.get("evaluate") and trainer.is_global_zero:  # before metrics.json: the run's last part
        _evaluate(cfg, output_dir)
    if trainer.is_global_zero and metrics:
        write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def _evaluate(cfg: DictConfig, run_dir: Path) -> None:
    """`aevae-eval run_dir=<run_dir>` with this run's eval.* keys: eval.json in the run dir."""
    from aevae.commands.cli import command_keys
    from aevae.commands.eval import evaluate

    evaluate(command_keys("eval", run_dir=str(run_dir), eval=cfg.eval, sampler=cfg.sampler))


def _epoch_seconds(trainer: Any) -> float | None:
    """The mean training epoch's seconds, from the EpochTimer callback (when the run has one)."""
    from aevae.callbacks import EpochTimer

    timers = [cb for cb in trainer.callbacks if isinstance(cb, EpochTimer) and cb.epoch_seconds]
    return sum(timers[0].epoch_seconds) / len(timers[0].epoch_seconds) if timers else None


#: A failed run leaves its error here, in its run dir.
ERROR_FILE = "error.txt"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _task(cfg: DictConfig) -> Any:
    """One run. In a sweep a failure is recorded and raised to Hydra, which finishes the
    other jobs and then exits non-zero; a single run exits 2 on a mistake in its input."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if sweeping:
        _share_cores(hydra_cfg.launcher.get("n_jobs"))
    try:
        with own_distributed_setup(), own_tracker_runs():
            metrics = train(cfg)
    except Exception as err:  # a mistake in the user's input gets one line, not a traceback
        if is_stop(err):
            _report_stop(err, Path(hydra_cfg.runtime.output_dir))
        message = user_error(err)
        run_dir = Path(hydra_cfg.runtime.output_dir)
        write_error(run_dir, message or traceback.format_exc())
        if message is None:
            raise
        if sweeping:  # the job's line, once; Hydra's report at the sweep's end points to it
            log.error(message)
            raise JobFailed(f"its error is in {run_dir / ERROR_FILE}") from None
        _log_to_file(logging.ERROR, message)  # the console gets the one line below
        print(f"aevae-train: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if "SLURM_RESTART_COUNT" in os.environ:
        from aevae.engine.signals import forget_requeue

        forget_requeue()
    return _objective(cfg, metrics)


def is_stop(err: BaseException) -> bool:
    """Whether `err` is a signal's stop. Only aevae.engine.signals raises one: where it was never imported
    (a config refused before anything was built) the answer is no, without importing Lightning."""
    signals = sys.modules.get("aevae.engine.signals")
    return signals is not None and isinstance(err, signals.Stopped)


def _report_stop(stop: Any, run_dir: Path) -> None:
    """One line in the log, on stderr and in error.txt (requeueing a Slurm job first), then exit
    128 + the signal's number, also inside a sweep: the signal was meant for the whole process."""
    from lightning.pytorch.utilities import rank_zero_only

    from aevae.engine.signals import pass_on, requeue

    message = stop.message(run_dir, requeue(stop, run_dir))
    write_error(run_dir, message)
    log.error(message)
    if rank_zero_only.rank == 0:
        print(f"aevae-train: {message}", file=sys.stderr, flush=True)
    pass_on(stop)
    raise SystemExit(stop.exit_code) from None


@contextlib.contextmanager
def own_distributed_setup() -> Iterator[None]:
    """Leave no DDP state behind for the next job of a sweep run in this process.

    Lightning's DDP launcher exports MASTER_PORT, LOCAL_RANK, WORLD_SIZE, ... into this
    process and keeps its process group. The next job would read LOCAL_RANK as a sign
    that its ranks were started externally, start none, and talk to the dead ranks of
    the previous job.
    """
    names = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        dist = sys.modules.get("torch.distributed")  # not imported: nothing to clean up, and no 1 s import
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def own_tracker_runs() -> Iterator[None]:
    """Close the job's W&B run when the job ends, as finished or failed: Lightning's WandbLogger
    leaves it open until the process exits, and the next job of a sweep run in this process
    would log into it (`wandb.init` joins an open run)."""
    failed = True
    try:
        yield
        failed = False
    finally:
        wandb = sys.modules.get("wandb")  # not imported: no run to close
        if wandb is not None and wandb.run is not None:
            wandb.run.finish(exit_code=1 if failed else 0)


class JobFailed(RuntimeError):
    """A sweep job stopped on a mistake in its input (the message says which)."""


def _share_cores(n_jobs: int | None) -> None:
    """Jobs run side by side (joblib launcher) split the machine's cores instead of each
    starting one thread per core: oversubscribed threads made a 2-job sweep slower than
    running the jobs one after the other."""
    if n_jobs and n_jobs > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> Any:
    """What a sweeper minimizes: `optimized_metric` when it is set, else all test metrics."""
    if not (key := cfg.get("optimized_metric")):
        return metrics
    if key not in metrics:
        raise UserError(f"optimized_metric={key!r} is not among this run's metrics: {sorted(metrics)}")
    return metrics[key]


def _log_to_file(level: int, message: str) -> None:
    """`message` into the run's train.log (the file handlers of Hydra's logging), not the console."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def write_error(run_dir: Path, text: str) -> None:
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        try:
            write_text(run_dir / ERROR_FILE, text.rstrip() + "\n")
        except DiskError as err:  # the disk that failed the run may refuse this too: say so, then the error
            log.warning("%s", err)


#: Overrides that need a Hydra plugin from an extra: (module, extra, what it is).
PLUGINS = {
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna", "Hydra's Optuna sweeper"),
    "hydra/launcher=submitit_slurm": (
        "hydra_plugins.hydra_submitit_launcher",
        "slurm",
        "Hydra's submitit launcher",
    ),
    "hydra/launcher=submitit_local": (
        "hydra_plugins.hydra_submitit_launcher",
        "slurm",
        "Hydra's submitit launcher",
    ),
}


def _require_plugins(args: list[str]) -> None:
    """One line naming the extra to install, instead of Hydra's "Could not find" and the list of
    every option it knows, when an override needs a plugin that is not installed."""
    from aevae.config import require

    for arg in args:
        if arg in PLUGINS:
            module, extra, name = PLUGINS[arg]
            require(module, extra, by=arg, name=name)


def _check_sweep_config(args: list[str]) -> None:
    """Hydra composes a sweep's own config (its mode, launcher, sweeper) once with the sweep's
    overrides left out, so a key that only the swept configs have fails there
    (`experiment=zoo zoo=vae,hvae model.kl_warmup_epochs=5`: the default model, the AE, has no
    such key), and without `-m` Hydra reports it as an ambiguous sweep value. Compose that config
    here, and name the key and its fix in one line."""
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from aevae.config import compose_config

    given = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except HydraException:
        return  # Hydra says what is wrong with the syntax
    swept = [o.key_or_group for o in overrides if o.is_sweep_override()]
    if not swept:
        return
    fixed = [
        o.input_line
        for o in overrides
        if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")
    ]
    try:
        compose_config(fixed, output_dir=".")
    except HydraException as err:
        found = re.match(r"Could not override '([^']+)'", str(err))
        given_key = [o for o in overrides if found and o.key_or_group == found.group(1)]
        if not given_key:
            return  # another problem: Hydra or the run reports it
        key, value = given_key[0].key_or_group, given_key[0].input_line.split("=", 1)[1]
        raise UserError(
            f"{key}={value}: Hydra composes the sweep's own config once without the swept "
            f"{', '.join(swept)}, and that config has no {key}; write ++{key}={value} to set it in every job"
        ) from None


def main() -> Any:
    """The `aevae-train` command. `resume=RUN_DIR` continues that run: its own overrides,
    its run dir and its last checkpoint, with any other overrides given on top.
    `resume=SWEEP_DIR` re-launches the jobs of that sweep that did not finish (aevae.sweeps)."""
    answer_version("aevae-train")
    args = sys.argv[1:]
    with one_line_errors("aevae-train"):
        _require_plugins(args)
    resume = [a for a in args if a.startswith("resume=")]
    if not resume and "SLURM_RESTART_COUNT" in os.environ:  # a Slurm job that requeued itself
        from aevae.engine.signals import requeued_run_dir

        if found := requeued_run_dir():
            resume = [f"resume={found}"]
            args.append(resume[0])
    if resume:
        from aevae.commands.sweeps import is_sweep_dir, resume_command

        others = [a for a in args if not a.startswith("resume=")]
        target = resume[-1].split("=", 1)[1]
        with one_line_errors("aevae-train"):
            if is_sweep_dir(target):
                sys.argv = [sys.argv[0], *resume_command(target, others)]
            else:
                from aevae.engine.checkpointing import resume_overrides

                sys.argv = [sys.argv[0], *resume_overrides(target, others), resume[-1]]
    sys.argv = [sys.argv[0], *quote_paths(sys.argv[1:])]
    with one_line_errors("aevae-train"):
        _check_sweep_config(sys.argv[1:])
    try:
        return _task()
    finally:
        from aevae.commands.summary import write_pending

        write_pending()  # a sweep with a failed job never reaches Hydra's on_multirun_end


if __name__ == "__main__":
    main()
