"""Compare evaluated runs: the tutorial's AE-vs-VAE table (Markdown) and their prior samples side by side.

Same as the `aevae-compare` command; see `python scripts/compare.py --help`.
"""

from aevae.commands.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
