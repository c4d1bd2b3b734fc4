"""Random streams seeded by where they are used, not by what ran before."""

from __future__ import annotations

import torch


def keyed_generator(key: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded by the integers `key` alone (e.g. seed, epoch, position):
    the same draws for the same key in any process and after any resume (the hash of a tuple of
    ints is not salted, unlike that of a str)."""
    return torch.Generator(device=device).manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)
