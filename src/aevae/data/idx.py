"""The IDX files on disk: archives, headers, and damage found before torchvision reads them."""

from __future__ import annotations

import gzip
import math
import shutil
import struct
from pathlib import Path

from aevae.config import UserError

#: IDX magic numbers for unsigned-byte data with 3 dims (images) and 1 dim (labels).
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


class DataError(UserError):
    """The data set cannot be read as configured; the message says how to fix it."""


def idx_count(path: Path) -> int | None:
    """The item count in an IDX file's header (bytes 4-8, big-endian), if the file is there."""
    try:
        with open(path, "rb") as f:
            return struct.unpack(">II", f.read(8))[1]
    except (OSError, struct.error):
        return None


def check_idx(path: Path, item_shape: tuple[int, ...]) -> None:
    """Refuse a file whose magic, item shape or length is not what its header promises.

    torchvision would fail on such a file with a reshape error naming no file, or
    read a wrong-typed file as garbage.
    """
    magic = IMAGES_MAGIC if item_shape else LABELS_MAGIC
    fix = "delete it and run with data.download=true, or copy an intact file there"
    with open(path, "rb") as f:
        header = f.read(4 + 4 * (1 + len(item_shape)))
    if len(header) < 4 or struct.unpack(">I", header[:4])[0] != magic:
        found = f"0x{struct.unpack('>I', header[:4])[0]:08x}" if len(header) >= 4 else "nothing"
        raise DataError(
            f"{path} is not an IDX file of uint8 data (magic {found}, expected 0x{magic:08x}); {fix}"
        )
    if len(header) < 8 + 4 * len(item_shape):
        raise DataError(f"{path} is truncated inside its header; {fix}")
    count, *shape = struct.unpack(f">{1 + len(item_shape)}I", header[4:])
    if tuple(shape) != item_shape:
        raise DataError(f"{path} holds items of shape {tuple(shape)}, expected {item_shape}")
    expected = len(header) + count * math.prod(item_shape)
    if (size := path.stat().st_size) != expected:
        raise DataError(
            f"{path} has {size} bytes but its header promises {count} items ({expected} bytes): "
            f"it is truncated or damaged; {fix}"
        )


def unpack_archives(raw: Path, names: list[str]) -> None:
    """Unpack `<name>.gz` next to each missing IDX file: an offline copy may hold only the
    archives (Debian's dataset-fashion-mnist does, recompressed, so torchvision's
    checksums refuse them and would try the network instead)."""
    for name in names:
        archive, target = raw / f"{name}.gz", raw / name
        if not target.is_file() and archive.is_file():
            partial = target.with_suffix(".partial")
            try:
                with gzip.open(archive, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                partial.replace(target)  # never leave a truncated IDX file behind
            except OSError as err:
                raise DataError(
                    f"cannot unpack {archive} ({err.strerror}); copy the .gz files into a writable "
                    "<data.root>/<Dataset>/raw/ folder"
                ) from err
