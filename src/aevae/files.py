"""Output files that appear whole or not at all, and run dirs that belong to one run.

- `atomic_open` / `write_text` write `<path>.tmp`, fsync and rename it over `path`: a crash or a
  full disk leaves the previous file as it was and no half-written one. A disk that refuses
  (no space, read-only, not creatable) raises `DiskError`, one line naming the path.
- `${aevae.new_dir:PATTERN}` (conf/hydra/default.yaml) claims a fresh dir for a run or sweep:
  PATTERN, or PATTERN-02, -03 ... when another run already holds it.
- `OutputDirs`, a Hydra callback, refuses a run or sweep dir that cannot be created or written,
  with one line, before Hydra writes anything into it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from aevae.config import UserError, one_line_errors


class DiskError(UserError):
    """A file or folder could not be written; `path` is where, `problem` says why."""

    def __init__(self, path: Path, problem: str, message: str) -> None:
        super().__init__(message)
        self.path, self.problem = path, problem


def _full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def reason(err: OSError, path: Path) -> str:
    """What the disk said, in words that point at the cause."""
    if err.errno in (errno.ENOTDIR, errno.EEXIST):  # a folder on the way is a file
        blocker = next((p for p in (path, *path.parents) if p.is_file()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    if _full(err):
        return "no space left on device"
    if err.errno == errno.EROFS:
        return "read-only file system"
    return (err.strerror or str(err)).lower()


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", intact: Path | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """A file handle whose contents replace `path` once the block ends without error.

    On any failure the temporary file is removed and `path` keeps its old contents; an
    OSError becomes a DiskError that says so and names `intact` (default: `path` itself,
    if it exists) as the previous file that is still whole.
    """
    path = Path(path)
    # a name of its own per process and thread: ranks of one run may write the same file
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(err, OSError):
            raise
        previous = intact if intact is not None else (path if path.is_file() else None)
        kept = f"the previous {previous} is intact" if previous else "nothing was written"
        problem = reason(err, path)
        fix = "free space or choose another place" if _full(err) else "choose another place"
        raise DiskError(path, problem, f"cannot write {path}: {problem}; {kept} ({fix})") from err


def write_text(path: str | Path, text: str) -> None:
    """`path.write_text(text)`, whole or not at all (see `atomic_open`)."""
    with atomic_open(path) as handle:
        handle.write(text)


def writable_dir(path: Path) -> None:
    """Create `path` if needed and check that a file can be written into it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        problem = reason(err, path)
        raise DiskError(path, f"cannot be created: {problem}", f"cannot create {path}: {problem}") from err
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        problem = reason(err, path)
        raise DiskError(path, f"is not writable: {problem}", f"cannot write into {path}: {problem}") from err


def new_dir(pattern: str) -> str:
    """Claim `pattern` as a new folder, or `pattern-02`, `-03` ... when it exists already:
    mkdir is atomic, so two runs started in the same second never share one. Hydra caches
    the result per config (and copies it into each sweep job's config), so a run claims once."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ranks started by torchrun: each would claim one
        raise UserError(
            f"hydra.run.dir is not set, and each of the {os.environ['WORLD_SIZE']} processes would claim "
            "its own run dir; give every process the same hydra.run.dir=DIR"
        )
    base = Path(pattern)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        problem = reason(err, base.parent)
        raise DiskError(base, f"cannot be created: {problem}", f"cannot create {base}: {problem}") from err
    for number in itertools.count(1):
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number:02d}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue  # another run's
        except OSError as err:
            problem = reason(err, candidate)
            raise DiskError(
                candidate, f"cannot be created: {problem}", f"cannot create {candidate}: {problem}"
            ) from err
        return str(candidate)
    raise AssertionError("unreachable")


# A run's own dir is claimed once per config: use_cache keeps the first answer.
OmegaConf.register_new_resolver("aevae.new_dir", new_dir, use_cache=True, replace=True)


class OutputDirs(Callback):
    """Claim and check the run dir (a sweep: the sweep dir) before Hydra writes into it: a
    folder that cannot be created or written ends `program` with one line and exit status 2."""

    def __init__(self, program: str) -> None:
        self.program = program

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    def _check(self, config: DictConfig, key: str) -> None:
        with one_line_errors(self.program):
            try:
                folder = str(OmegaConf.select(config, key))  # claims a new dir (the default)
                writable_dir(Path(folder))
            except Exception as err:
                disk = _disk_error(err)
                if disk is None:
                    raise
                under = "" if disk.path.is_absolute() else f" (under {Path.cwd()})"
                raise UserError(
                    f"{key}={disk.path}{under} {disk.problem}; give {key} a folder you can write to"
                ) from None
        with read_write(config), open_dict(config):  # .hydra/hydra.yaml and multirun.yaml name it
            OmegaConf.update(config, key, folder)


def _disk_error(err: BaseException | None) -> DiskError | None:
    """The DiskError in `err`'s chain (OmegaConf wraps what a resolver raises)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DiskError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
