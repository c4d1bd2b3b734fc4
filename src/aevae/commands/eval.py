"""`aevae-eval`: every claim of the tutorial about a trained AE/VAE, measured from its checkpoint.

aevae-eval run_dir=outputs/runs/<date>/<time>
aevae-eval ckpt=path/to/epoch009.ckpt eval.iw_samples=5000 data.noise=gaussian

Writes `eval.json` (and `samples.png`, the first 64 scored prior samples) into
the checkpoint's run dir, or to `out`, and prints the numbers as a table.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aevae.commands.cli import answer_version, standalone_app
from aevae.config import UserError, one_line_errors, quote_paths
from aevae.files import DiskError, atomic_open, writable_dir, write_text

log = logging.getLogger("aevae.eval")

#: Posterior draws per image of a sampled KL (`latent_draws`): its mean over the test images is
#: then within ~0.1 nat of the expectation, at a few percent of the IW bound's cost.
KL_DRAWS = 10


class Stopwatch:
    """Seconds per section of the evaluation, kept for eval.json."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


def prefixed(group: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{group}/{name}": value for name, value in values.items()}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """All measures of the checkpoint `cfg` names; returns what eval.json holds."""
    from aevae.validation import validate

    validate(cfg)
    import torch

    from aevae.data.shapes import num_classes
    from aevae.evaluation.compression import compressed_quality
    from aevae.evaluation.judge import conditional_accuracy, digit_judge
    from aevae.evaluation.latent_space import interpolation_smoothness
    from aevae.evaluation.reconstruction import decoding_quality
    from aevae.evaluation.representation import knn_accuracy, linear_probe_accuracy
    from aevae.loading import load_run, split_images
    from aevae.metrics import ActiveUnits
    from aevae.sampling.latents import encode_all, labels_for
    from aevae.sampling.pictures import decoded_images, fixed_indices

    clock, options = Stopwatch(), cfg.eval
    with clock("load"):
        run = load_run(cfg)
        out = Path(cfg.out) if cfg.out else run.run_dir / "eval.json"
        _check_writable(out)  # before the minutes of measuring, not after
        model, device = run.model, run.device
        sampler, more_samplers = _samplers(cfg, model)  # one the model refuses: before measuring
        generator = torch.Generator(device).manual_seed(cfg.seed)
        train_x, train_y = split_images(run, "train")
        test_x, test_y = split_images(run, "test")
    metrics: dict[str, float] = {}
    with torch.no_grad():
        with clock("reconstruction"):
            train_codes, test_codes = encode_all(model, train_x, train_y), encode_all(model, test_x, test_y)
            metrics |= prefixed("recon", decoding_quality(model, test_codes, test_x, labels=test_y))
            active = ActiveUnits(test_codes.shape[1]).to(device)  # a VQ-VAE's grid: D * h * w
            active.update(test_codes)
            metrics["latent/active_units"] = active.compute().item()
        if hasattr(model, "log_weights"):  # a likelihood model: its bounds on log p(x)
            with clock("likelihood"):
                some, some_y = test_x, test_y
                if options.iw_images is not None and options.iw_images < len(test_x):
                    index = fixed_indices(len(test_x), options.iw_images, cfg.seed).to(device)
                    some, some_y = test_x[index], test_y[index]
                metrics |= prefixed("likelihood", _likelihood(model, some, some_y, options, generator))
            if hasattr(model, "posterior"):  # a Gaussian posterior: the total correlation of its codes
                from aevae.models.btcvae import total_correlation

                with clock("total_correlation"):  # its own noise: the draws after it stay as they were
                    own = torch.Generator(device).manual_seed(cfg.seed)
                    metrics["latent/tc"] = total_correlation(
                        model, test_x, generator=own, labels=labels_for(model, test_y)
                    )
        data, data_config = run.datamodule, _data_config(model, cfg)
        labelled = num_classes(data_config) >= 2
        if not labelled:
            log.info("data=%s has no class labels: no linear probe, 5-NN or judge scores", data.name)
        if model.conditional:  # its codes were computed from the labels: a probe would read them back
            log.info("model=%s encodes the labels: no linear probe or 5-NN", type(model).__name__.lower())
        if labelled and not model.conditional:
            with clock("representation"):
                metrics["repr/linear_probe"] = linear_probe_accuracy(
                    train_codes, train_y, test_codes, test_y, inverse_regularization=options.probe_c
                )
                metrics["repr/knn"] = knn_accuracy(train_codes, train_y, test_codes, test_y, k=options.knn_k)
        with clock("smoothness"):
            pairs = fixed_indices(len(test_x), 2 * options.interpolation_pairs, cfg.seed).to(device)
            start, end = test_x[pairs].chunk(2)
            smoothness = interpolation_smoothness(
                model,
                start,
                end,
                options.interpolation_steps,
                options.interpolation_mode,
                test_y[pairs].chunk(2),
            )
            metrics |= prefixed("smoothness", smoothness)
        for name, fitted in _to_fit(cfg.sampler.name, sampler, more_samplers if labelled else {}).items():
            with clock(f"sampler_fit/{name}"):
                fitted.fit(train_codes)
        with clock("samples"):
            sample_labels = model.sample_labels(options.num_samples)  # every class in turn (conditional)
            codes = sampler.sample(options.num_samples, generator, labels=sample_labels)
            samples = decoded_images(model, codes, sample_labels)
            if labelled:
                judge, judge_dir = digit_judge(data_config, options.judge_epochs, device)
                metrics |= prefixed("samples", _sample_quality(judge, test_x, samples))
                if model.conditional:
                    metrics["samples/conditional_accuracy"] = conditional_accuracy(
                        judge, samples, sample_labels
                    )
                metrics["samples/judge_accuracy"] = json.loads((judge_dir / "metrics.json").read_text())[
                    "test/accuracy"
                ]
        for name, other in more_samplers.items() if labelled else ():
            with clock(f"samples/{name}"):  # each from the seed: the order of the list does not matter
                same_seed = torch.Generator(device).manual_seed(cfg.seed)
                other_codes = other.sample(options.num_samples, same_seed, labels=sample_labels)
                other_samples = decoded_images(model, other_codes, sample_labels)
                metrics |= prefixed(f"samples/{name}", _sample_quality(judge, test_x, other_samples))
        with clock("compression"):
            quality = {
                bits: compressed_quality(model, test_x, test_codes, train_codes, bits, labels=test_y)
                for bits in sorted({options.bits, *options.rate_distortion_bits})
            }
            metrics |= prefixed("compression", quality[options.bits])
        if data.corrupt is not None:
            with clock("denoising"):
                metrics |= prefixed("denoise", _denoising(model, data))
    report = {
        "checkpoint": str(run.checkpoint),
        "model": type(model).__name__,
        "latent_dim": model.latent_dim,
        "data": data.name,
        "noise": repr(data.corrupt) if data.corrupt is not None else None,
        "metrics": metrics,
        "rate_distortion": [quality[bits] for bits in options.rate_distortion_bits],
        "seconds": clock.seconds,
    }
    per_row = model.num_classes if model.conditional else 8  # a conditional model's: a column per class
    _write(report, samples[: 64 // per_row * per_row], out, per_row)
    return report


def _samplers(cfg: DictConfig, model: Any) -> tuple[Any, dict[str, Any]]:
    """The configured sampler (`cfg.sampler`) and those `eval.samplers` names, by name: each with the
    options of conf/sampler/<name>.yaml; the configured one itself where it is the one named."""
    from omegaconf import OmegaConf

    from aevae.config import CONFIG_DIR
    from aevae.sampling.samplers import make_sampler

    configured = make_sampler(cfg.sampler, model)

    def named(name: str) -> Any:
        if name == cfg.sampler.name:
            return configured
        return make_sampler(OmegaConf.load(CONFIG_DIR / "sampler" / f"{name}.yaml"), model)

    return configured, {name: named(name) for name in cfg.eval.get("samplers") or ()}


def _to_fit(name: str, configured: Any, more: dict[str, Any]) -> dict[str, Any]:
    """The samplers that are fitted to the training codes, each once, by name."""
    unique: dict[str, Any] = {}
    for key, sampler in [(name, configured), *more.items()]:
        if sampler.fits and all(sampler is not seen for seen in unique.values()):
            unique[key] = sampler
    return unique


def _sample_quality(judge: Any, test_x: Any, samples: Any) -> dict[str, float]:
    """The judge's digit-likeness and inception score of `samples`, and their Fréchet distance to
    the test images in its features."""
    from aevae.evaluation.frechet import JudgeFeatures, frechet_distance
    from aevae.evaluation.judge import judge_scores

    return {
        **judge_scores(judge, samples),
        "fd_judge": frechet_distance(JudgeFeatures(judge), test_x, samples),
    }


def _check_writable(out: Path) -> None:
    try:
        writable_dir(out.parent)
    except DiskError as err:
        raise UserError(f"out={out}: {err.path} {err.problem}; give out= a path you can write to") from None


def _data_config(model: Any, cfg: DictConfig) -> dict[str, Any]:
    """The data settings of the model's run, with the non-null keys of `cfg.data` on top."""
    from omegaconf import OmegaConf

    overrides = {k: v for k, v in OmegaConf.to_container(cfg.data).items() if v is not None}
    return {**model.run_config["data"], **overrides}


def _likelihood(
    model: Any, images: Any, labels: Any, options: DictConfig, generator: Any
) -> dict[str, float]:
    """Test-set means of the VAE's -ELBO and IW-NLL (from the same `iw_samples` draws), and its KL
    (a conditional model's given the images' `labels`)."""
    from aevae.evaluation.likelihood import likelihood_bounds
    from aevae.losses import bits_per_dim, kl_std_normal
    from aevae.sampling.latents import batches, labels_for, posterior_all

    totals = {"neg_elbo": 0.0, "iw_nll": 0.0}
    for x, y in batches(images, labels_for(model, labels), options.batch_size):
        bounds = likelihood_bounds(model, x, options.iw_samples, generator=generator, labels=y)
        for name in totals:
            totals[name] += bounds[name].sum().item()
    means = {name: total / len(images) for name, total in totals.items()}
    if hasattr(model, "latent_draws"):  # a KL with no closed form (a VampPrior, two layers): the model's
        # own sampled estimate, log q - log p averaged over KL_DRAWS posterior draws per image
        kl_sum = sum(
            model.latent_draws(x, KL_DRAWS, generator)[1].mean(0).sum().item()
            for x in images.split(options.batch_size)
        )
        kl = kl_sum / len(images)
    else:
        kl = kl_std_normal(*posterior_all(model, images, labels)).mean().item()
    bits = {f"{name}_bits_per_dim": bits_per_dim(value, model.image_shape) for name, value in means.items()}
    return {**means, **bits, "kl": kl, "iw_samples": options.iw_samples, "images": len(images)}


def _denoising(model: Any, data: Any) -> dict[str, float]:
    """Mean PSNR against the clean test images of the noisy ones and of the model's reconstructions
    of them: the seeded noise of the data's own test batches."""
    from aevae.evaluation.reconstruction import per_image_psnr
    from aevae.sampling.latents import labels_for

    noisy_psnr, denoised_psnr, count = 0.0, 0.0, 0
    for noisy, labels, clean in data.test_dataloader():
        noisy_psnr += per_image_psnr(noisy, clean).sum().item()
        denoised_psnr += per_image_psnr(model(noisy, labels_for(model, labels)), clean).sum().item()
        count += len(clean)
    return {"psnr_noisy": noisy_psnr / count, "psnr_denoised": denoised_psnr / count}


def _write(report: dict[str, Any], samples: Any, path: Path, per_row: int = 8) -> None:
    from torchvision.utils import save_image

    write_text(path, json.dumps(report, indent=2) + "\n")
    with atomic_open(path.with_name("samples.png"), "wb") as f:
        save_image(samples, f, format="png", nrow=per_row, padding=2, pad_value=0.5)
    print(format_table(report))
    print(f"wrote {path} and {path.with_name('samples.png')}")


def format_table(report: dict[str, Any]) -> str:
    """The metrics of eval.json, one per line, and its rate-distortion table."""
    title = f"{report['model']} (latent_dim {report['latent_dim']}) {report['checkpoint']}"
    width = max(len(name) for name in report["metrics"])
    lines = [title, *(f"  {name:<{width}}  {_number(v)}" for name, v in report["metrics"].items())]
    lines.append("  rate-distortion: bits  bytes/image  ratio  mse  psnr")
    for row in report["rate_distortion"]:
        cells = (row["bits"], row["code_bytes"], row["ratio"], row["mse"], row["psnr"])
        lines.append("    " + "  ".join(_number(c) for c in cells))
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@standalone_app("eval")
def _task(cfg: DictConfig) -> None:
    with one_line_errors("aevae-eval"):
        evaluate(cfg)


def main() -> None:
    """The `aevae-eval` command."""
    answer_version("aevae-eval")
    sys.argv = [sys.argv[0], *quote_paths(sys.argv[1:])]
    _task()


if __name__ == "__main__":
    main()
