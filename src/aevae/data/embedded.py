"""The MNIST copy shipped with aevae: the four official files, gzipped, in `aevae/data/mnist/`.

A data root that holds no MNIST falls back to it before any download is tried, so a fresh
install trains offline. torchvision reads IDX files, not archives, so the first use unpacks
them into the cache (`$AEVAE_CACHE/data`, else `~/.cache/aevae/data`) and checks each one's md5.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
from pathlib import Path

from aevae.config import cache_dir
from aevae.data.idx import DataError

log = logging.getLogger(__name__)

ARCHIVES = Path(__file__).resolve().parent / "mnist"

#: md5 of the decompressed official IDX files (the same bytes torchvision downloads).
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def has_mnist(root: Path) -> bool:
    """Whether `root/MNIST/raw` holds a copy (each file as IDX or as its .gz archive)."""
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in MD5)


def embedded_root() -> Path:
    """A data root holding the shipped MNIST as IDX files, unpacked and checked on first use."""
    root = cache_dir() / "data"
    raw = root / "MNIST" / "raw"
    missing = [name for name in MD5 if not (raw / name).is_file()]
    if missing:
        log.info("unpacking the MNIST copy shipped with aevae into %s (once)", raw)
        raw.mkdir(parents=True, exist_ok=True)
        for name in missing:
            _unpack(ARCHIVES / f"{name}.gz", raw / name)
    return root


def _unpack(archive: Path, target: Path) -> None:
    """Decompress `archive` to `target` through a temporary file (processes that unpack at the
    same time, as DDP ranks do, never see a half-written file), refusing a wrong md5."""
    if not archive.is_file():
        raise DataError(f"{archive} is missing from the installed aevae; reinstall it (pip install aevae)")
    # a name of its own per process *and thread* (the tests unpack from threads of one process)
    partial = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.partial")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(archive, "rb") as src, open(partial, "wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != MD5[target.name]:
            raise DataError(
                f"{archive} unpacks to md5 {digest.hexdigest()}, not MNIST's {MD5[target.name]}: "
                "the installed copy is damaged; reinstall aevae"
            )
        partial.replace(target)
    except OSError as err:
        raise DataError(
            f"cannot unpack the shipped MNIST into {target.parent} ({err.strerror}); "
            "set $AEVAE_CACHE to a writable folder, or point data.root at a copy"
        ) from err
    finally:
        partial.unlink(missing_ok=True)
