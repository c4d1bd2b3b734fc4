"""The Python API: train, load and use models from a script or a notebook.

    import aevae
    metrics, run_dir = aevae.train(["model=vae", "latent_dim=8"])
    model = aevae.load(run_dir)
    images, labels = aevae.images(model, "test")
    codes = aevae.encode(model, images)

Images are float tensors `[N, C, H, W]` in [0, 1]; codes are `[N, latent_dim]`. A conditional
model (model=cvae) encodes and decodes with class labels: `labels=` (class ids `[N]`, or one int
for all), e.g. `aevae.encode(model, images, labels=labels)`.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor


class Trained(NamedTuple):
    """What `train` returns: `metrics, run_dir = aevae.train(...)`."""

    metrics: dict[str, float]  # as in the run dir's metrics.json
    run_dir: Path


def train(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> Trained:
    """Train one run as `aevae-train *overrides` would, in this process.

    The run writes to `output_dir`, by default where the command would (a new dir
    outputs/runs/<date>/<time> below the working directory, `-02`, `-03` ... appended when a run
    of the same second has it; or `hydra.run.dir=...`), then tests its best checkpoint. A
    mistake in the overrides raises `aevae.config.UserError`; a failed run leaves `error.txt` in
    its run dir, as the command does.
    """
    from hydra.errors import HydraException

    from aevae.commands.train import is_stop, own_distributed_setup, own_tracker_runs, write_error
    from aevae.commands.train import train as fit
    from aevae.config import UserError, compose_config, quote_paths, user_error

    try:
        cfg = compose_config(quote_paths(list(overrides)), output_dir=output_dir)
    except HydraException as err:  # an unknown option, a key that is not there, bad syntax
        raise UserError(str(err).strip().splitlines()[0]) from err
    run_dir = Path(cfg.paths.output_dir)
    try:
        with own_distributed_setup(), own_tracker_runs():
            metrics = fit(cfg)
    except Exception as err:
        stop = err.message(run_dir) if is_stop(err) else None  # type: ignore[attr-defined]
        write_error(run_dir, stop or user_error(err) or traceback.format_exc())
        raise
    return Trained(metrics, run_dir)


def load(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """The model of a run dir (its best checkpoint, else its last) or of a checkpoint file, on
    `device` ("cpu", "cuda", "auto": a GPU when there is one), in eval mode.

    `model.run_config` holds the run's resolved config (a dict), `model.image_shape` the
    (C, H, W) of its data and `model.latent_dim` the size of its code.
    """
    from aevae.loading import pick_device
    from aevae.models import Model, load_checkpoint, resolve_checkpoint

    checkpoint = resolve_checkpoint(path, key="path")
    return load_checkpoint(checkpoint, map_location=pick_device(str(device)), key="path", expect=Model)


def images(model: Any, split: str = "test", **data: Any) -> tuple[Tensor, Tensor]:
    """A split ("train", "val", "test") of the data `model` was trained on, as floats in [0, 1]
    on the model's device, and its labels. `data` sets keys of the run's `data` config on top,
    e.g. `root="/data"` or `noise="gaussian"` (the inputs are then the corrupted images)."""
    from aevae.config import UserError
    from aevae.data import to_float
    from aevae.loading import datamodule_of

    datamodule = datamodule_of(model, data, model.device)
    if split not in datamodule.splits:
        raise UserError(f"split={split!r} is not one of {sorted(datamodule.splits)}")
    x, labels = datamodule.splits[split]
    x = to_float(x)
    if datamodule.corrupt is not None:  # the seeded noise of the split's place, as its batches get
        x = datamodule.corrupt(x, 0, 0)
    return x, labels


def _labels(model: Any, labels: Any, count: int) -> Tensor | None:
    """`labels` for `count` images or codes, checked against the model, on its device: None for
    an unconditional model; class ids `[count]` (an int: all of that class) for a conditional one."""
    from aevae.config import UserError

    name = type(model).__name__
    if not model.conditional:
        if labels is not None:
            raise UserError(f"labels= are for a conditional model (model=cvae); this {name} takes none")
        return None
    if labels is None:
        raise UserError(
            f"this {name} encodes and decodes given class labels: pass labels= (a class id per image, "
            "e.g. the labels of aevae.images(model), or one int for all)"
        )
    labels = torch.as_tensor(labels, device=model.device)
    if labels.dim() == 0:
        labels = labels.expand(count)
    if labels.shape != (count,) or labels.is_floating_point() or labels.is_complex():
        raise UserError(
            f"labels= must be {count} class ids (one per image) or one int, not a {labels.dtype} "
            f"tensor of shape {tuple(labels.shape)}"
        )
    if count and not 0 <= int(labels.min()) <= int(labels.max()) < model.num_classes:
        raise UserError(f"labels= must be class ids 0 to {model.num_classes - 1} of this {name}")
    return labels.long()


@torch.no_grad()
def encode(model: Any, x: Tensor, batch_size: int = 1000, *, labels: Any = None) -> Tensor:
    """Deterministic codes `[N, latent_dim]` of images `x` (the VAE's posterior means); `labels`:
    the images' classes, for a conditional model."""
    from aevae.sampling.latents import encode_all

    return encode_all(model, x, _labels(model, labels, len(x)), batch_size)


@torch.no_grad()
def decode(model: Any, z: Tensor, batch_size: int = 1000, *, labels: Any = None) -> Tensor:
    """The images `[N, C, H, W]` (pixel means in [0, 1]) that the decoder gives codes `z` (and,
    for a conditional model, `labels`)."""
    from aevae.sampling.latents import batches
    from aevae.sampling.pictures import decoded_images

    parts = batches(z, _labels(model, labels, len(z)), batch_size)
    return torch.cat([decoded_images(model, part, y) for part, y in parts])


@torch.no_grad()
def reconstruct(model: Any, x: Tensor, batch_size: int = 1000, *, labels: Any = None) -> Tensor:
    """The mean reconstructions of images `x`: decode(encode(x)) (with the images' `labels`, for
    a conditional model)."""
    from aevae.sampling.latents import batches

    return torch.cat([model(part, y) for part, y in batches(x, _labels(model, labels, len(x)), batch_size)])


@torch.no_grad()
def sample(
    model: Any,
    num: int,
    seed: int = 0,
    fit: Tensor | None = None,
    sampler: str | dict[str, Any] = "auto",
    *,
    labels: Any = None,
) -> Tensor:
    """`num` new images, decoded from codes the `sampler` draws from a seeded generator: "prior" (the
    model's own, a VAE's N(0, I)), "gaussian" or "gmm" (fitted to the codes of `fit`, default: the
    model's training images), or "auto" (the prior where the model has one, else "gaussian");
    options as a dict, e.g. `{"name": "gmm", "components": 20}` (conf/sampler/gmm.yaml). A
    conditional model draws them for `labels` (class ids `[num]`, or one int for all), by default
    for every class in turn."""
    from aevae.sampling.latents import labels_for
    from aevae.sampling.samplers import make_sampler

    drawer = make_sampler({"name": sampler} if isinstance(sampler, str) else sampler, model)
    if drawer.fits and fit is not None:
        drawer.fit(encode(model, fit))
    elif drawer.fits:
        x, y = images(model, "train")
        drawer.fit(encode(model, x, labels=labels_for(model, y)))
    generator = torch.Generator(model.device).manual_seed(seed)
    if labels is None:
        labels = model.sample_labels(num)
    return decode(model, drawer.sample(num, generator, labels=_labels(model, labels, num)), labels=labels)


@torch.no_grad()
def interpolate(
    model: Any,
    start: Tensor,
    end: Tensor,
    steps: int = 10,
    mode: str = "slerp",
    *,
    labels: tuple[Any, Any] | None = None,
) -> Tensor:
    """Decodings of `steps` points (both ends included) on the path between the codes of `start`
    and `end`: `[steps, C, H, W]` for two images, `[P, steps, C, H, W]` for two batches of P.
    `mode`: "slerp" (spherical, the default) or "lerp" (a straight line). A conditional model
    needs `labels=(start's, end's)` (ints for two images, class ids `[P]` for batches); its
    decoder's label moves from one to the other along the path."""
    from aevae.config import UserError
    from aevae.sampling.latents import INTERPOLATIONS
    from aevae.sampling.pictures import decoded_paths

    if mode not in INTERPOLATIONS:
        raise UserError(f"mode={mode!r} is not one of {sorted(INTERPOLATIONS)}")
    if labels is not None and not (isinstance(labels, tuple | list) and len(labels) == 2):
        raise UserError("labels= of interpolate are the (start, end) classes, e.g. labels=(3, 7)")
    single = start.dim() == len(model.image_shape)
    count = 1 if single else len(start)
    first, last = (None, None) if labels is None else labels
    ends = _labels(model, first, count), _labels(model, last, count)
    starts, stops = (start[None], end[None]) if single else (start, end)
    paths = decoded_paths(model, starts, stops, steps, mode, None if ends[0] is None else ends)
    return paths[0] if single else paths
