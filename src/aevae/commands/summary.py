"""`aevae-summary SWEEP_DIR`: one table and one figure for a whole sweep.

Reads every job dir of a Hydra multirun (`.hydra/overrides.yaml` plus
`metrics.json`, or `error.txt` for a failed job) and writes, into the sweep
dir, `summary.csv`, `summary.md` and `summary.png` (test metrics against
`latent_dim`, one line per value of the other swept keys). Failed jobs stay in
the table with their error. `aevae-train -m` writes them itself when its sweep
ends (`SweepSummary`, a Hydra callback); this command writes them again.

    aevae-summary outputs/multirun/2026-01-31/12-00-00
    aevae-summary outputs/multirun/2026-01-31/12-00-00 --out report/
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from aevae.commands.cli import argument_parser
from aevae.config import PER_LAUNCH_KEYS
from aevae.files import atomic_open, write_text

log = logging.getLogger(__name__)

PLOTTED = ("test/mse", "test/bce", "test/neg_elbo", "test/active_units")


def read_job(job_dir: Path) -> dict[str, Any]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    row: dict[str, Any] = {"job": job_dir.name}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key not in PER_LAUNCH_KEYS:  # a resumed job's ckpt_path says how it ran, not what it is
            row[key] = yaml.safe_load(value) if value else value
    metrics, error = job_dir / "metrics.json", job_dir / "error.txt"
    if metrics.is_file():
        row["status"] = "ok"
        row.update(json.loads(metrics.read_text()))
    elif error.is_file():
        row["status"] = "failed"
        row["error"] = error.read_text().strip().splitlines()[-1]  # the message, also after a traceback
    else:
        row["status"] = "incomplete"  # still running, or killed without a word
    return row


def _order(value: Any) -> tuple:
    """Numbers before strings, numbers by value: latent_dim=2 < 8 < 32."""
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    jobs = [read_job(d) for d in sorted(sweep_dir.iterdir()) if (d / ".hydra" / "overrides.yaml").is_file()]
    if not jobs:
        raise SystemExit(f"aevae-summary: error: no job dirs (with .hydra/overrides.yaml) in {sweep_dir}")
    swept = swept_keys(jobs)
    return sorted(jobs, key=lambda r: [_order(r.get(k)) for k in swept] + [_order(r["job"])])


def swept_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between jobs, in command-line order."""
    metric_like = {"job", "status", "error"}
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job if k not in keys and k not in metric_like and "/" not in k]
    return [k for k in keys if len({repr(j.get(k)) for j in jobs}) > 1] or keys


def write_tables(jobs: list[dict[str, Any]], out: Path) -> None:
    swept = swept_keys(jobs)
    metrics = sorted({k for j in jobs for k in j if "/" in k})
    columns = ["job", *swept, "status", *metrics, "error"]
    with atomic_open(out / "summary.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(jobs)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for job in jobs:
        cells = [_cell(job.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    write_text(out / "summary.md", "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def plot(jobs: list[dict[str, Any]], out: Path) -> Path | None:
    """Each test metric against latent_dim, one line per combination of the other swept keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in jobs if j["status"] == "ok" and isinstance(j.get("latent_dim"), int)]
    metrics = [m for m in PLOTTED if any(m in j for j in done)]
    if not done or not metrics:
        return None
    others = [k for k in swept_keys(jobs) if k != "latent_dim"]

    def label(job: dict[str, Any]) -> str:
        return ",".join(f"{k}={job.get(k)}" for k in others) or "runs"

    colors = {name: f"C{i}" for i, name in enumerate(sorted({label(j) for j in done}))}  # same in every panel
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        groups: dict[str, list[tuple[int, float]]] = {}
        for job in done:
            if metric in job and not math.isnan(job[metric]):
                groups.setdefault(label(job), []).append((job["latent_dim"], job[metric]))
        for name, points in sorted(groups.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=name, color=colors[name])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent_dim")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "summary.png"
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def write_summary(sweep_dir: Path, out: Path | None = None) -> tuple[list[dict[str, Any]], Path | None]:
    """summary.csv, summary.md and summary.png of `sweep_dir`, into `out` (default: the sweep
    dir); returns the jobs' rows and the figure, if there was anything to plot."""
    out = out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    jobs = summarize(sweep_dir)
    write_tables(jobs, out)
    if any(sweep_dir.glob("*/eval.json")):  # evaluated jobs (evaluate=true, the zoo): their ranking too
        from aevae.commands.compare import expand, markdown_table, read_eval, samples_figure

        reports = [read_eval(run) for run in expand([sweep_dir])]
        write_text(out / "compare.md", markdown_table(reports, rank=True))
        samples_figure(reports, out / "compare.png")
    return jobs, plot(jobs, out)


def not_ok(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["job"] for j in jobs if j["status"] != "ok"]


class SweepSummary(Callback):
    """Hydra callback (`hydra.callbacks.summary` in conf/hydra/default.yaml): writes the summary
    into the sweep dir when a multirun ends. Hydra calls `on_multirun_end` only after a sweep in
    which every job succeeded (its basic sweeper re-raises a failed job's error first), so a
    sweep that started is also summarized by `write_pending`, which `aevae-train` calls on its
    way out, however the sweep ended."""

    pending: ClassVar[list[Path]] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.pending.append(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_pending()


def write_pending() -> None:
    """The summary of each sweep started in this process and not yet summarized."""
    while SweepSummary.pending:
        sweep_dir = SweepSummary.pending.pop()
        if not sweep_dir.is_dir() or not any(sweep_dir.glob("*/.hydra/overrides.yaml")):
            continue  # no job got as far as its dir: nothing to summarize
        try:
            jobs, _ = write_summary(sweep_dir)
        except Exception as err:  # the sweep's own outcome matters more than its summary
            log.warning("could not summarize %s (%s); run aevae-summary %s", sweep_dir, err, sweep_dir)
            continue
        failed = not_ok(jobs)
        log.info(
            "sweep summary: %d jobs, %d failed or incomplete%s: %s",
            len(jobs),
            len(failed),
            f" ({', '.join(failed)})" if failed else "",
            sweep_dir / "summary.md",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("aevae-summary", __doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir, e.g. outputs/multirun/<date>/<time>")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep dir)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"aevae-summary: error: {args.sweep_dir} is not a directory")
    out = args.out or args.sweep_dir
    jobs, figure = write_summary(args.sweep_dir, out)
    print((out / "summary.md").read_text())
    failed = not_ok(jobs)
    print(f"{len(jobs)} jobs, {len(failed)} failed or incomplete{': ' + ', '.join(failed) if failed else ''}")
    print(f"wrote {out / 'summary.csv'}, {out / 'summary.md'}" + (f", {figure}" if figure else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
