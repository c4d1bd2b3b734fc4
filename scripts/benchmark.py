"""Seconds per MNIST epoch: tutorial loop, hand-written loop and aevae, timed in one run.

Same as the `aevae-bench` command; see `python scripts/benchmark.py --help`.
"""

from aevae.commands.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
