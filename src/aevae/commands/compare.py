"""`aevae-compare RUN_DIR...`: the tutorial's AE-vs-VAE table, made quantitative from eval.json files.

Reads each run's `eval.json` and `samples.png` (written by `aevae-eval`) and writes
into `--out`: `compare.md`, one column per run and the tutorial's rows
(deterministic vs probabilistic latent: reconstruction vs likelihood; KL
regularisation: active units and smoothness; generation: prior-sample
digit-likeness; then representation, compression and denoising), and
`compare.png`, the runs' prior samples side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aevae.commands.cli import argument_parser
from aevae.files import write_text

#: (the tutorial's row, what is measured, eval.json metric, format); "↓"/"↑": lower/higher is better.
ROWS = (
    ("latent: deterministic vs probabilistic", "reconstruction MSE per pixel ↓", "recon/mse", ".4f"),
    ("", "reconstruction BCE, nats/image ↓", "recon/bce", ".1f"),
    ("", "−ELBO, nats/image ↓", "likelihood/neg_elbo", ".1f"),
    ("", "importance-weighted NLL, nats/image ↓", "likelihood/iw_nll", ".1f"),
    ("", "importance samples per image", "likelihood/iw_samples", ".0f"),
    ("", "test images in those estimates", "likelihood/images", ".0f"),
    ("regularisation: KL to the prior", "KL, nats/image", "likelihood/kl", ".1f"),
    ("", "active units", "latent/active_units", ".0f"),
    ("", "interpolation: RMS change per step ↓", "smoothness/step_change", ".4f"),
    ("", "interpolation: largest / mean step ↓", "smoothness/max_step_ratio", ".3f"),
    ("generation: sampling new images", "prior samples: digit-likeness ↑", "samples/digit_likeness", ".3f"),
    ("", "prior samples: inception score ↑", "samples/inception_score", ".2f"),
    ("", "conditional samples: the judge sees their label ↑", "samples/conditional_accuracy", ".3f"),
    ("representation", "linear probe accuracy ↑", "repr/linear_probe", ".4f"),
    ("", "5-NN accuracy ↑", "repr/knn", ".4f"),
    ("compression", "bits per latent dim", "compression/bits", ".0f"),
    ("", "code bytes/image (raw: 784)", "compression/code_bytes", ".0f"),
    ("", "PSNR of the quantized code, dB ↑", "compression/psnr", ".2f"),
    ("denoising", "PSNR of the noisy images, dB", "denoise/psnr_noisy", ".2f"),
    ("", "PSNR of the denoised images, dB ↑", "denoise/psnr_denoised", ".2f"),
)


def read_eval(run: Path) -> dict[str, Any]:
    """A run dir's eval.json (or the eval.json given itself), with `dir`, `name` (its column)
    and `title` (its picture: job dir names run long) added."""
    path = run if run.suffix == ".json" else run / "eval.json"
    if not path.is_file():
        raise SystemExit(f"aevae-compare: error: {path} does not exist; run aevae-eval run_dir={run} first")
    report = json.loads(path.read_text())
    report["dir"] = path.parent
    report["name"] = f"{report['model']} ({path.parent.name})"
    report["title"] = f"{report['model']}, latent_dim {report['latent_dim']}"
    return report


def markdown_table(reports: list[dict[str, Any]]) -> str:
    """The ROWS that any report has, one column per report; a dash where a model has no such measure."""
    header = ["tutorial's row", "measure", *(r["name"] for r in reports)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(reports)]
    for section, label, key, fmt in ROWS:
        values = [r["metrics"].get(key) for r in reports]
        if all(v is None for v in values):
            continue
        cells = ["—" if v is None else format(v, fmt) for v in values]
        lines.append(f"| {section} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def samples_figure(reports: list[dict[str, Any]], path: Path) -> Path | None:
    """The runs' `samples.png` side by side, titled with their digit-likeness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in reports if (r["dir"] / "samples.png").is_file()]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 4.4), squeeze=False)
    for ax, report in zip(axes[0], shown, strict=True):
        ax.imshow(plt.imread(report["dir"] / "samples.png"), cmap="gray")
        likeness = report["metrics"].get("samples/digit_likeness")
        title = report["title"]
        ax.set_title(f"{title}\ndigit-likeness {likeness:.3f}" if likeness is not None else title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # two-line titles stay inside
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("aevae-compare", __doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs holding eval.json (or eval.json files)")
    parser.add_argument(
        "--out", type=Path, default=Path("compare"), help="where to write (default: ./compare)"
    )
    parser.add_argument(
        "--names", nargs="+", metavar="NAME", help="one column title per run (default: model and job dir)"
    )
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.runs):
        parser.error(f"--names needs one name per run: got {len(args.names)} for {len(args.runs)} runs")
    reports = [read_eval(run) for run in args.runs]
    for report, name in zip(reports, args.names or (), strict=False):
        report["name"] = report["title"] = name
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(reports)
    write_text(args.out / "compare.md", table)
    figure = samples_figure(reports, args.out / "compare.png")
    print(table)
    print(f"wrote {args.out / 'compare.md'}" + (f", {figure}" if figure else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
