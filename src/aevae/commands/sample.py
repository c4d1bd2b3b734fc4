"""`aevae-sample`: PNG pictures of a trained AE/VAE: samples, reconstructions, interpolations, latents.

aevae-sample run_dir=outputs/runs/<date>/<time> "sample.pairs=[[0,1],[3,7]]"

Writes into `out` (default: `<run dir>/samples/`): `prior_samples.png`,
`reconstructions.png`, `interpolations.png`, `latents.png` (test codes coloured
by label, PCA to 2-D above latent_dim 2) and, for latent_dim 2, `manifold.png`
(the decodings of a grid over the latent plane). A conditional model (model=cvae)
draws its samples for `sample.label`, or, when it is null, a grid with one class
per column and one code per row.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aevae.commands.cli import answer_version, standalone_app
from aevae.config import UserError, one_line_errors, quote_paths


def sample(cfg: DictConfig) -> dict[str, Path]:
    """Write the pictures of the checkpoint `cfg` names; returns them by name."""
    from aevae.validation import validate

    validate(cfg)
    import torch
    from torchvision.utils import make_grid, save_image

    from aevae.loading import load_run, split_images
    from aevae.sampling.latents import encode_all, fit_gaussian, gaussian_draws
    from aevae.sampling.pictures import (
        decoded_images,
        fixed_indices,
        interpolation_grid,
        per_class,
        reconstruction_grid,
    )
    from aevae.sampling.samplers import make_sampler

    options = cfg.sample
    if options.reconstructions % options.per_row:
        raise UserError(
            f"sample.reconstructions={options.reconstructions} must be a multiple of "
            f"sample.per_row={options.per_row}"
        )
    run = load_run(cfg)
    model, device = run.model, run.device
    sampler = make_sampler(cfg.sampler, model)
    label = _label(options.label, model)
    test_x, test_y = split_images(run, "test")
    pairs = _pairs(options.pairs, len(test_x))
    out = Path(cfg.out) if cfg.out else run.run_dir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    written: dict[str, Path] = {}

    def save(name: str, grid: torch.Tensor) -> None:
        written[name] = out / f"{name}.png"
        save_image(grid, written[name])

    with torch.no_grad():
        train_codes = encode_all(model, *split_images(run, "train"))
        if sampler.fits:
            sampler.fit(train_codes)
        per_row = options.per_row
        labels = None if label is None else torch.full((options.num_samples,), label, device=device)
        codes = sampler.sample(options.num_samples, generator, labels=labels)
        if model.conditional and label is None:  # every class: one per column, a code per row
            per_row = model.num_classes
            codes, labels = per_class(model, codes[: -(-len(codes) // per_row)])
        samples = decoded_images(model, codes, labels)
        save("prior_samples", make_grid(samples, nrow=per_row, pad_value=0.5))
        shown = slice(options.reconstructions)
        save("reconstructions", reconstruction_grid(model, test_x[shown], options.per_row, test_y[shown]))
        start, end = test_x[pairs[:, 0]], test_x[pairs[:, 1]]
        ends = (test_y[pairs[:, 0]], test_y[pairs[:, 1]])
        save("interpolations", interpolation_grid(model, start, end, options.steps, options.mode, ends))
        if train_codes.shape[1] == 2:  # a 2-d code (not a VQ-VAE grid of 2-d vectors): its plane
            grid = manifold_codes(options.manifold_size, device)  # the quantiles of N(0, I) ...
            if not model.standard_prior:  # ... or of the Gaussian fitted to the codes (AE, learned priors)
                grid = gaussian_draws(grid, *fit_gaussian(train_codes))
            # a conditional model's plane for one class: sample.label, else the first
            classes = torch.full((len(grid),), label or 0, device=device) if model.conditional else None
            images = decoded_images(model, grid, classes)
            save("manifold", make_grid(images, nrow=options.manifold_size, padding=0))
        points = fixed_indices(len(test_x), options.scatter_points, cfg.seed).to(device)
        written["latents"] = scatter_latents(
            encode_all(model, test_x[points], test_y[points]),
            test_y[points],
            out / "latents.png",
            type(model).__name__,
        )
    for path in written.values():
        print(f"wrote {path}")
    return written


def _label(label: Any, model: Any) -> int | None:
    """`sample.label` checked against the model: a class id of a conditional model, or null."""
    if label is None:
        return None
    name = type(model).__name__
    if not model.conditional:
        raise UserError(
            f"sample.label={label} is for a conditional model (model=cvae); this {name} draws no "
            "classes: drop sample.label"
        )
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < model.num_classes:
        raise UserError(
            f"sample.label={label} is not a class of this {name}: give 0 to {model.num_classes - 1}, "
            "or null for every class"
        )
    return label


def _pairs(pairs: Any, count: int) -> Any:
    import torch
    from omegaconf import OmegaConf

    pairs = OmegaConf.to_container(pairs) if OmegaConf.is_config(pairs) else pairs
    if not isinstance(pairs, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
        raise UserError(
            f"sample.pairs={pairs} is not allowed: expected pairs of test indices, e.g. [[0,1],[3,7]]"
        )
    if bad := [i for pair in pairs for i in pair if not (isinstance(i, int) and 0 <= i < count)]:
        raise UserError(f"sample.pairs: {bad[0]} is not an index into the {count} test images")
    return torch.tensor([list(p) for p in pairs])


def manifold_codes(size: int, device: Any) -> Any:
    """Standard-normal quantiles on a `size` x `size` grid, `[size * size, 2]`, row by row from the
    top (second dim high) to the bottom, so the picture has the plane's orientation."""
    import torch

    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, size))
    rows, columns = torch.meshgrid(quantiles.flip(0), quantiles, indexing="ij")
    return torch.stack([columns, rows], dim=-1).reshape(-1, 2).to(device)


def scatter_latents(codes: Any, labels: Any, path: Path, title: str) -> Path:
    """A scatter plot of `codes` coloured by label: the codes themselves for 2 dims, else their
    projection on the first two principal components (`torch.pca_lowrank`)."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = codes.float().cpu()
    axes_names = ("z[0]", "z[1]")
    if codes.shape[1] > 2:
        _, _, basis = torch.pca_lowrank(codes, q=2, center=True)
        codes = (codes - codes.mean(0)) @ basis[:, :2]
        axes_names = ("PC 1", "PC 2")
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels.cpu(), cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(axes_names[0])
    ax.set_ylabel(axes_names[1])
    ax.set_title(f"{title}: test codes")
    fig.savefig(path)
    plt.close(fig)
    return path


@standalone_app("sample")
def _task(cfg: DictConfig) -> None:
    with one_line_errors("aevae-sample"):
        sample(cfg)


def main() -> None:
    """The `aevae-sample` command."""
    answer_version("aevae-sample")
    sys.argv = [sys.argv[0], *quote_paths(sys.argv[1:])]
    _task()


if __name__ == "__main__":
    main()
