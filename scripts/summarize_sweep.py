"""Summarize a sweep: CSV + Markdown table and a PNG figure of every job's metrics.

Same as the `aevae-summary` command; see `python scripts/summarize_sweep.py --help`.
"""

from aevae.commands.summary import main

if __name__ == "__main__":
    raise SystemExit(main())
