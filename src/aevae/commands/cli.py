"""What every aevae command shares: `--version`, and Hydra apps that see only their own config.

A Hydra app lists in its help page and offers to tab completion every config group of its
config dir. The training groups (trainer, callbacks, experiment, ...) live in conf/, so a
command that reads none of them (aevae-eval, aevae-sample, ...) is given its config through
Hydra's ConfigStore instead: its own conf/<name>.yaml and its help page
conf/hydra/help/<name>.yaml, with no config dir at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from aevae.config import CONFIG_DIR


def version(program: str) -> str:
    """What `program --version` prints, e.g. `aevae-train 0.1.0`."""
    from aevae import __version__

    return f"{program} {__version__}"


def answer_version(program: str, args: list[str] | None = None) -> None:
    """Print the version and exit when `--version` is among `args` (default: sys.argv[1:]),
    before Hydra, which has no such flag, parses them."""
    if "--version" in (sys.argv[1:] if args is None else args):
        print(version(program))
        raise SystemExit(0)


def standalone_app(name: str) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """`hydra.main` for the command whose config is conf/<name>.yaml, with its help page
    conf/hydra/help/<name>.yaml (its defaults list picks it: `override hydra/help: <name>`)."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    node = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    store.store(name=name, node=node)
    for group in _own_groups(node):  # e.g. evaluation and sampler, shared with aevae-train
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            header = path.read_text().splitlines()[0]
            package = header.removeprefix("# @package ").strip() if header.startswith("# @package ") else None
            store.store(group=group, name=path.stem, node=OmegaConf.load(path), package=package)
    help_page = OmegaConf.load(CONFIG_DIR / "hydra" / "help" / f"{name}.yaml")
    store.store(group="hydra/help", name=name, node=help_page, package="hydra.help")
    return hydra.main(version_base="1.3", config_path="pkg://hydra.conf", config_name=name)


def command_keys(name: str, **keys: Any) -> Any:
    """The keys of conf/<name>.yaml without its defaults list and Hydra settings, with `keys`
    merged on top: a command's config to call its function with, outside Hydra (aevae-train
    calling aevae-eval, the tests). Groups its defaults list would pick come in `keys`."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    for key in ("defaults", "hydra"):
        cfg.pop(key, None)
    cfg.merge_with(keys)
    return cfg


def _own_groups(node: Any) -> list[str]:
    """The groups of a config's defaults list that come from conf/ (not Hydra's)."""
    entries = [next(iter(e)) for e in node.get("defaults", []) if not isinstance(e, str)]
    return [g for g in entries if not g.startswith("override ") and (CONFIG_DIR / g).is_dir()]


def argument_parser(program: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of an argparse command: its module docstring as the help page (description
    and examples, as written), and `--version`."""
    parser = argparse.ArgumentParser(
        prog=program, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=version(program))
    return parser
