"""Decoded images kept on disk: decode a data set once, map it from the cache on later runs.

A cache file holds a data set's splits as uint8 tensors, named by a fingerprint of its
source files (paths, sizes, modification times) and of the settings that shaped the
tensors (image size, channels, ...): a changed file or setting names another file, and
the stale one is replaced. Files are written to a temporary name and renamed, under a
lock, so two jobs of a sweep starting together decode once and never read half a file.
Later runs load with `mmap=True`: the pages are read from disk as the batches need them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from aevae.config import cache_dir
from aevae.files import atomic_open

log = logging.getLogger(__name__)

#: Bumped when the layout of a cache file changes: older files are then rebuilt.
FORMAT = 1


def cache_folder(data_location: str | Path) -> Path:
    """`$AEVAE_CACHE` when set; else `.aevae_cache/` beside the data, where that can be
    written (a shared read-only copy cannot); else the user's cache."""
    if os.environ.get("AEVAE_CACHE"):
        return cache_dir()
    location = Path(data_location).expanduser().resolve()
    beside = (location if location.is_dir() else location.parent) / ".aevae_cache"
    if os.access(beside if beside.exists() else beside.parent, os.W_OK):
        return beside
    return cache_dir()


def fingerprint(files: Iterable[str | Path], settings: dict[str, Any]) -> str:
    """A digest of each file's path, size and mtime, and of `settings` (JSON-able)."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_or_build(folder: Path, name: str, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The cached contents `name-key.pt` in `folder`, built by `build()` (a dict of tensors and
    JSON-able values) and written there first if it is missing, damaged or for another key."""
    path = folder / f"{name}-{key}.pt"
    if (contents := _load(path)) is not None:
        return contents
    with locked(folder / f"{name}.lock"):
        if (contents := _load(path)) is not None:  # another process built it while we waited
            return contents
        stale = [p for p in folder.glob(f"{name}-*.pt") if p != path]
        if stale:
            log.info("data cache %s is stale (its source files or settings changed): rebuilding", stale[0])
        contents = build()
        with atomic_open(path, "wb") as f:  # whole or not at all: a reader never maps half a file
            torch.save(contents, f)
        for old in stale:
            old.unlink(missing_ok=True)
    log.info("data cache written: %s", path)
    return _load(path) or contents


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # truncated or overwritten: decode again rather than fail
        log.warning("data cache %s is damaged (%s): rebuilding", path, str(err).splitlines()[0])
        with contextlib.suppress(OSError):
            path.unlink()
        return None


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created with its folder): one process at a time."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
