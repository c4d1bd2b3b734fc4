"""Where the Hydra configs live, and how user mistakes are reported."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from omegaconf import ListConfig, OmegaConf


def _config_dir() -> Path:
    """conf/ packaged inside the wheel, else the source checkout's conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "train.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


CONFIG_DIR = _config_dir()


def cache_dir() -> Path:
    """`$AEVAE_CACHE`, else `~/.cache/aevae`: what aevae makes once and reuses (the digit judge,
    the unpacked MNIST it ships)."""
    return Path(os.environ.get("AEVAE_CACHE") or Path.home() / ".cache" / "aevae").expanduser()


#: Longest job-folder name made from a job's overrides; file systems refuse names over 255 bytes.
FOLDER_CHARS = 200


def one_folder(name: str) -> str:
    """A sweep job's overrides as one folder name (`${aevae.folder:...}` in conf/hydra): the '/'
    of a config group (`model/net=conv`) would otherwise nest the job dir in a folder `0_model`.
    A longer name than FOLDER_CHARS keeps its start and ends in a hash of the whole (the job's
    overrides stay whole in its .hydra/overrides.yaml and in the sweep's summary)."""
    folder = str(name).replace("/", ".")
    if len(folder.encode()) <= FOLDER_CHARS:
        return folder
    digest = hashlib.sha1(folder.encode()).hexdigest()[:8]
    return f"{folder.encode()[: FOLDER_CHARS - 10].decode(errors='ignore')}~{digest}"


OmegaConf.register_new_resolver("aevae.folder", one_folder, replace=True)


def _image_shape(data: object) -> ListConfig:
    """`${aevae.image_shape:${data}}`: [C, H, W] of the configured data's images (a ListConfig:
    `OmegaConf.resolve`, which Hydra's instantiate runs, stores no plain list in a node)."""
    from aevae.data.shapes import shape_of

    return ListConfig(shape_of(data))


OmegaConf.register_new_resolver("aevae.image_shape", _image_shape, replace=True)


def _num_classes(data: object) -> int:
    """`${aevae.num_classes:${data}}`: the classes of the configured data's labels (0: none)."""
    from aevae.data.shapes import num_classes

    return num_classes(data)


OmegaConf.register_new_resolver("aevae.num_classes", _num_classes, replace=True)


class UserError(ValueError):
    """A mistake in the user's config or data; its message says what and how to fix it."""


def user_error(err: BaseException) -> str | None:
    """The one-line message of the first UserError in `err`'s cause chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return str(current).splitlines()[0] if str(current) else type(current).__name__
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def require(module: str, extra: str, *, by: str, name: str | None = None) -> ModuleType:
    """`module`, imported; where it is not installed, a one-line UserError naming the extra that
    installs it: `require("mlflow", "mlflow", by="logger=mlflow", name="MLflow")` raises
    "logger=mlflow needs MLflow: pip install 'aevae[mlflow]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and module != err.name and not module.startswith(f"{err.name}."):
            raise  # the package is there but one of its own imports failed: that is its error
        raise UserError(f"{by} needs {name or module}: pip install 'aevae[{extra}]'") from err


#: Overrides that belong to one launch of a run, not to the run (resuming drops or replaces them).
PER_LAUNCH_KEYS = ("resume", "ckpt_path", "hydra.run.dir")

#: Overrides whose value is a path: a sweep's job dirs have '=' in their names (0_model=ae).
PATH_KEYS = (
    "ckpt",
    "run_dir",
    "out",
    "pretrained",
    "resume",
    "ckpt_path",
    "data.root",
    "data.path",
    "hydra.run.dir",
)


def quote_paths(args: list[str]) -> list[str]:
    """`run_dir=sweep/0_model=ae` as `run_dir='sweep/0_model=ae'`: Hydra's override grammar reads an
    unquoted '=' in a value as a syntax error. A value with no '=' is left alone; one that is not a
    path but a sweep over existing paths (`pretrained=a/0_x=1,a/1_x=2,null`) has each path quoted."""
    result = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in PATH_KEYS and "=" in value and value[:1] not in ("'", '"'):
            arg = f"{key}={','.join(quoted(item) for item in _split_paths(value))}"
        result.append(arg)
    return result


def _split_paths(value: str) -> list[str]:
    """`value` as one path, or as the comma-separated existing paths (and nulls) it is made of."""
    if Path(value).exists():
        return [value]
    items, current = [], ""
    for piece in value.split(","):
        current = f"{current},{piece}" if current else piece
        if current == "null" or Path(current).exists():
            items, current = [*items, current], ""
    return items if items and not current else [value]


def quoted(item: str) -> str:
    """`item` as one quoted value of Hydra's override grammar ('=' and ',' in it stay literal)."""
    if item == "null":
        return item
    return "'" + item.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def one_line_errors(program: str) -> Iterator[None]:
    """A mistake in the user's input ends `program` with one line and exit status 2, no traceback."""
    try:
        yield
    except Exception as err:
        if (message := user_error(err)) is None:
            raise
        print(f"{program}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def compose_config(overrides: list[str] | tuple[str, ...] = (), output_dir: str | Path | None = None):
    """The `aevae-train` config with `overrides`, outside a Hydra run (scripts, notebooks, tests).

    `output_dir` stands in for the Hydra run dir that `paths.output_dir` points to; by default
    it is a new one, claimed as `aevae-train` would (`hydra.run.dir`: outputs/runs/<date>/<time>,
    or <time>-02 ... when another run has it).
    Hydra's global state is cleared again on return, so this can be called any number of times.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import aevae.files  # noqa: F401  (registers ${aevae.new_dir:...}, which claims the run dir)

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=output_dir is None)
    with open_dict(cfg):
        if output_dir is None:
            output_dir = Path(cfg.hydra.run.dir).resolve()  # the CLI's run dir is absolute too
            del cfg["hydra"]
        cfg.paths.output_dir = str(output_dir)
    return cfg
