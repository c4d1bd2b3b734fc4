"""The schema of the user-facing config keys, checked before anything is built.

Each rule names a key, what is allowed, and a check. `validate(cfg)` raises a
`UserError` whose one line names the key, the value and what is allowed, so a
typo costs a second, not a traceback after the data has loaded. Keys absent
from a config (a group option without them) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aevae.config import UserError

ACTIVATIONS = ("none", "relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")  # aevae.models.nets
DATASET_NAMES = (  # aevae.data.shapes.NAMES
    "mnist",
    "fashion_mnist",
    "kmnist",
    "cifar10",
    "svhn",
    "celeba",
    "image_folder",
    "array",
)
MNIST_FAMILY = DATASET_NAMES[:3]
NOISES = ("gaussian", "salt_pepper", "mask")  # aevae.data.noise.NOISES
INTERPOLATIONS = ("slerp", "lerp")  # aevae.sampling.latents.INTERPOLATIONS
SAMPLERS = ("auto", "prior", "gaussian", "gmm")  # aevae.sampling.samplers: conf/sampler/<name>.yaml
GMM_INITS = ("kmeans++", "random")  # aevae.sampling.samplers.GMMSampler
TRAIN_IMAGES = 60_000  # in each of the MNIST family
MAX_BITS = 24  # uniform quantization of float32 codes: beyond 24 bits it stores nothing more
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
DEVICES = ("auto", "cpu", "cuda", "mps")  # what aevae-eval and aevae-sample run on
PRECISIONS = (
    "32-true",
    "32",
    "bf16-mixed",
    "bf16-true",
    "64-true",
    "64",
    "16-mixed",
    "16",
    "transformer-engine",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str
    check: Callable[[Any], bool]
    optional: bool = False  # null is allowed


def int_at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= n


def number_above(n: float) -> Callable[[Any], bool]:
    return lambda v: _is_number(v) and v > n


def one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def fraction(v: Any) -> bool:
    return _is_number(v) and 0 < v <= 1


def path(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def int_between(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and low <= v <= high


def int_list(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and bool(v) and all(map(int_between(low, high), v))


def batch_limit(v: Any) -> bool:
    """Lightning's limit_*_batches / val_check_interval: a count, or a fraction in (0, 1]."""
    return (_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 < v <= 1.0)


def devices(v: Any) -> bool:
    if _is_int(v):
        return v >= 1 or v == -1
    if isinstance(v, str):
        return v == "auto" or all(p.strip().isdigit() for p in v.split(",") if p.strip())
    return isinstance(v, list) and bool(v) and all(_is_int(d) and d >= 0 for d in v)


RULES = (
    Rule("latent_dim", "an integer >= 1", int_at_least(1)),
    Rule("seed", "an integer", _is_int),
    Rule("test", "true or false", lambda v: isinstance(v, bool)),
    Rule("evaluate", "true or false", lambda v: isinstance(v, bool)),
    Rule("steps_per_chunk", "auto or an integer >= 1", lambda v: v == "auto" or int_at_least(1)(v)),
    Rule("cuda_graph", "true or false", lambda v: isinstance(v, bool)),
    Rule("data.name", f"one of {', '.join(DATASET_NAMES)}", one_of(DATASET_NAMES)),
    Rule("data.root", "a path", path, optional=True),
    Rule("data.path", "a folder (data=image_folder) or a file (data=array)", path, optional=True),
    Rule("data.image_size", "an integer >= 4", int_at_least(4), optional=True),
    Rule("data.channels", "1 (grey) or 3 (RGB)", lambda v: v in (1, 3), optional=True),
    Rule("data.val_fraction", "a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    Rule("data.test_fraction", "a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    Rule("data.on_bad_file", "error or skip", one_of(("error", "skip"))),
    Rule("data.device_memory_gb", "null or a number >= 0", lambda v: _is_number(v) and v >= 0, optional=True),
    Rule("data.download", "true or false", lambda v: isinstance(v, bool)),
    Rule("data.batch_size", "an integer >= 1", int_at_least(1)),
    Rule("data.eval_batch_size", "an integer >= 1", int_at_least(1)),
    Rule("data.global_batch_size", "null or an integer >= 1", int_at_least(1), optional=True),
    Rule(
        "data.val_size",
        f"an integer in [0, {TRAIN_IMAGES - 1}]",
        lambda v: _is_int(v) and 0 <= v < TRAIN_IMAGES,
    ),
    Rule(
        "data.train_size",
        f"null or an integer in [1, {TRAIN_IMAGES}]",
        lambda v: _is_int(v) and 1 <= v <= TRAIN_IMAGES,
        optional=True,
    ),
    Rule("data.split_seed", "an integer", _is_int),
    Rule("data.binarize", "one of none, dynamic, static", one_of(("none", "dynamic", "static"))),
    Rule("data.binarize_seed", "an integer", _is_int),
    Rule("model.k", "an integer >= 1", int_at_least(1)),
    Rule("model.kl_warmup_epochs", "an integer >= 0", int_at_least(0)),
    Rule("model.free_bits", "a number >= 0", lambda v: _is_number(v) and v >= 0),
    Rule("loss.learn_sigma", "true or false", lambda v: isinstance(v, bool)),
    Rule("loss.components", "an integer >= 1", int_at_least(1)),
    Rule(
        "model.net.channels",
        "auto or a list of integers >= 1, e.g. [32,64,128]",
        lambda v: v == "auto" or (isinstance(v, list) and bool(v) and all(int_at_least(1)(c) for c in v)),
    ),
    Rule("model.net.blocks", "an integer >= 0", int_at_least(0)),
    Rule("model.net.residual_channels", "an integer >= 1", int_at_least(1)),
    Rule("data.drop_last", "true or false", lambda v: isinstance(v, bool)),
    Rule(
        "model.hidden_dims",
        "a list of integers >= 1, e.g. [256,64]",
        lambda v: isinstance(v, list) and all(int_at_least(1)(h) for h in v),
    ),
    Rule("model.lr", "a number > 0", number_above(0)),
    Rule("model.pseudo_inputs", "an integer >= 1", int_at_least(1)),
    Rule("model.latent_dim_2", "an integer >= 1", int_at_least(1)),
    Rule(
        "model.hidden_dims_2",
        "a list of integers >= 1, e.g. [50,50]",
        lambda v: isinstance(v, list) and all(int_at_least(1)(h) for h in v),
    ),
    Rule("model.bound", "elbo or iw", one_of(("elbo", "iw"))),
    Rule("model.beta", "a number >= 0", lambda v: _is_number(v) and v >= 0),
    Rule("model.latent_activation", f"one of {', '.join(ACTIVATIONS)}", one_of(ACTIVATIONS), optional=True),
    Rule("model.net.activation", f"one of {', '.join(ACTIVATIONS)}", one_of(ACTIVATIONS)),
    Rule("loss.sigma", "a number > 0", number_above(0)),
    Rule("trainer.accelerator", f"one of {', '.join(ACCELERATORS)}", one_of(ACCELERATORS)),
    Rule("trainer.devices", "an integer >= 1, -1, auto, or a list of device ids", devices),
    Rule("trainer.num_nodes", "an integer >= 1", int_at_least(1)),
    Rule("trainer.precision", f"one of {', '.join(PRECISIONS)}", lambda v: str(v) in PRECISIONS),
    Rule("trainer.max_epochs", "an integer >= -1 (-1: no limit)", int_at_least(-1)),
    Rule("trainer.max_steps", "an integer >= -1 (-1: no limit)", int_at_least(-1)),
    Rule("trainer.limit_train_batches", "null, an integer >= 0 or a fraction in (0, 1]", batch_limit, True),
    Rule("trainer.limit_val_batches", "null, an integer >= 0 or a fraction in (0, 1]", batch_limit, True),
    Rule("trainer.limit_test_batches", "null, an integer >= 0 or a fraction in (0, 1]", batch_limit, True),
    Rule(
        "trainer.val_check_interval",
        "null, an integer >= 1 or a fraction in (0, 1]",
        lambda v: batch_limit(v) and v != 0,
        optional=True,
    ),
    Rule("trainer.check_val_every_n_epoch", "null or an integer >= 1", int_at_least(1), optional=True),
    Rule("trainer.log_every_n_steps", "an integer >= 0", int_at_least(0)),
    Rule("trainer.num_sanity_val_steps", "an integer >= -1", int_at_least(-1)),
    Rule("trainer.gradient_clip_val", "null or a number > 0", number_above(0), optional=True),
    Rule("trainer.gradient_clip_algorithm", "null, norm or value", one_of(("norm", "value")), optional=True),
    Rule(
        "trainer.accumulate_grad_batches",
        "1 (raise data.batch_size instead)",
        lambda v: v == 1,
        optional=True,
    ),
    Rule("trainer.deterministic", "true, false or warn", lambda v: isinstance(v, bool) or v == "warn"),
    Rule("callbacks.model_checkpoint.every_n_train_steps", "null or an integer >= 1", int_at_least(1), True),
    Rule("callbacks.model_checkpoint.save_top_k", "an integer >= -1", int_at_least(-1)),
    Rule("callbacks.step_checkpoint.every_n_train_steps", "null or an integer >= 1", int_at_least(1), True),
    Rule("eval.iw_samples", "an integer >= 1", int_at_least(1)),
    Rule("eval.batch_size", "an integer >= 1", int_at_least(1)),
    Rule("eval.iw_images", "null or an integer >= 1", int_at_least(1), optional=True),
    Rule("eval.bits", f"an integer in [1, {MAX_BITS}]", int_between(1, MAX_BITS)),
    Rule("eval.rate_distortion_bits", f"a list of integers in [1, {MAX_BITS}]", int_list(1, MAX_BITS)),
    Rule("eval.probe_c", "a number > 0", number_above(0)),
    Rule("eval.knn_k", "an integer >= 1", int_at_least(1)),
    Rule("eval.interpolation_pairs", "an integer >= 1", int_at_least(1)),
    Rule("eval.interpolation_steps", "an integer >= 2", int_at_least(2)),
    Rule("eval.interpolation_mode", f"one of {', '.join(INTERPOLATIONS)}", one_of(INTERPOLATIONS)),
    Rule("eval.num_samples", "an integer >= 1", int_at_least(1)),
    Rule("eval.judge_epochs", "an integer >= 1", int_at_least(1)),
    Rule("data.label_fraction", "a fraction in (0, 1]", fraction),
    Rule("data.noise", f"null or one of {', '.join(NOISES)}", one_of(NOISES), optional=True),
    Rule("data.noise_level", "a fraction in (0, 1]", fraction, optional=True),
    Rule("pretrained", "null or a checkpoint or run dir", path, optional=True),
    Rule("ckpt", "null or a checkpoint file", path, optional=True),
    Rule("run_dir", "null or a run dir", path, optional=True),
    Rule("out", "null or a path", path, optional=True),
    Rule("device", "auto, cpu, cuda or cuda:N", lambda v: isinstance(v, str) and v.split(":")[0] in DEVICES),
    Rule("sample.num_samples", "an integer >= 1", int_at_least(1)),
    Rule("sample.per_row", "an integer >= 1", int_at_least(1)),
    Rule("sample.reconstructions", "an integer >= 1", int_at_least(1)),
    Rule("sample.steps", "an integer >= 2", int_at_least(2)),
    Rule("sample.mode", f"one of {', '.join(INTERPOLATIONS)}", one_of(INTERPOLATIONS)),
    Rule("sample.manifold_size", "an integer >= 2", int_at_least(2)),
    Rule("sample.scatter_points", "an integer >= 1", int_at_least(1)),
    Rule("sampler.name", f"one of {', '.join(SAMPLERS)} (sampler=NAME)", one_of(SAMPLERS)),
    Rule("sampler.components", "an integer >= 1", int_at_least(1)),
    Rule("sampler.iterations", "an integer >= 1", int_at_least(1)),
    Rule("sampler.tolerance", "a number >= 0", lambda v: _is_number(v) and v >= 0),
    Rule("sampler.ridge", "a number > 0", number_above(0)),
    Rule("sampler.init", f"one of {', '.join(GMM_INITS)}", one_of(GMM_INITS)),
    Rule("sampler.seed", "an integer", _is_int),
    Rule(
        "eval.samplers",
        f"a list of samplers ({', '.join(SAMPLERS)}), e.g. [gaussian,gmm]",
        lambda v: isinstance(v, list) and all(one_of(SAMPLERS)(s) for s in v) and len(set(v)) == len(v),
    ),
)

_MISSING = object()


def _lookup(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node[part]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def validate(cfg: DictConfig) -> None:
    """Raise `UserError` for the first key outside its allowed values."""
    for rule in RULES:
        value = _lookup(cfg, rule.key)
        if value is _MISSING or (value is None and rule.optional):
            continue
        if not rule.check(value):
            raise UserError(f"{rule.key}={_show(value)} is not allowed: expected {rule.allowed}")
    _check_split(cfg)
    _check_model(cfg)
    _check_devices(cfg)
    if (path := cfg.get("ckpt_path")) and path != "last" and not Path(path).is_file():
        raise UserError(f"ckpt_path={path} does not exist or is not a file")
    _check_pretrained(cfg)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).replace(" ", "")


def _check_split(cfg: DictConfig) -> None:
    """Split sizes of the MNIST family, known before loading (other sets: checked at setup)."""
    data = cfg.get("data")
    if not data or "batch_size" not in data or data.get("name", "mnist") not in MNIST_FAMILY:
        return
    train = data.get("train_size") or TRAIN_IMAGES - data.get("val_size", 0)
    train = max(1, round(train * data.get("label_fraction", 1.0)))
    if data.get("train_size") and data.train_size + data.get("val_size", 0) > TRAIN_IMAGES:
        raise UserError(
            f"data.train_size={data.train_size} + data.val_size={data.val_size} is more than the "
            f"{TRAIN_IMAGES} training images"
        )
    if data.batch_size > train:
        raise UserError(
            f"data.batch_size={data.batch_size} is not allowed: expected at most the {train} training images"
        )


#: Why the VAE refuses loss=mse (shared with aevae.models.VAE).
MSE_VAE = (
    "loss=mse is not a likelihood, so it has no ELBO; use loss=bce (Bernoulli) or loss=gaussian "
    "(set loss.sigma) for the VAE"
)


def _check_model(cfg: DictConfig) -> None:
    model, loss = cfg.get("model"), cfg.get("loss")
    if not model:
        return
    if (
        str(model.get("_target_", "")).endswith("VAE")
        and not str(model.get("_target_", "")).endswith("VQVAE")  # no ELBO: any reconstruction loss
        and loss
        and str(loss.get("_target_", "")).endswith("MSE")
    ):
        raise UserError(MSE_VAE)
    shape = _lookup(cfg, "model.image_shape")
    data = cfg.get("data")
    if shape is not _MISSING and shape is not None and data and "name" in data:
        from aevae.data.shapes import shape_of

        if list(shape) != (expected := shape_of(data)):
            raise UserError(
                f"model.image_shape={_show(shape)} does not fit data={data.name}, whose images are "
                f"{_show(expected)}; leave model.image_shape to the data (image_shape: ${{image_shape}})"
            )


def _check_devices(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer")
    if not trainer or trainer.get("accelerator") not in ("gpu", "cuda"):
        return
    import torch  # only here: the common mistakes above fail without loading torch

    available = torch.cuda.device_count()
    if available == 0:
        raise UserError(
            f"trainer.accelerator={trainer.accelerator} is not allowed: "
            "no GPU is available here (use trainer=cpu)"
        )
    wanted = trainer.get("devices")
    count = len(wanted) if isinstance(wanted, list | tuple) else wanted
    if _is_int(count) and count > available:
        raise UserError(
            f"trainer.devices={wanted} is not allowed: expected at most the {available} GPU(s) here"
        )


def _check_pretrained(cfg: DictConfig) -> None:
    target = str(cfg.get("model", {}).get("_target_", ""))
    if cfg.get("pretrained") and target and not target.endswith(("Classifier", "VQPrior")):
        raise UserError(
            f"pretrained={cfg.pretrained} is not allowed with model={target.rsplit('.', 1)[-1]}: "
            "it is the encoder that experiment=finetune_classifier fine-tunes (or the VQ-VAE whose "
            "codes experiment=vqvae_prior models)"
        )
