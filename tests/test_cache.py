"""The decoded-image cache: hits, rebuilds, damage and two builders at once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from aevae.data.cache import cache_folder, fingerprint, load_or_build


def contents(fill: int) -> dict:
    return {"train": {"images": torch.full((4, 3, 8, 8), fill, dtype=torch.uint8)}, "classes": ["a", "b"]}


def test_second_load_is_a_hit_mapped_from_disk(tmp_path: Path) -> None:
    calls = []

    def build() -> dict:
        calls.append(1)
        return contents(7)

    first = load_or_build(tmp_path, "set", "k1", build)
    second = load_or_build(tmp_path, "set", "k1", build)
    assert len(calls) == 1
    assert torch.equal(first["train"]["images"], second["train"]["images"])
    assert second["classes"] == ["a", "b"]
    assert str(tmp_path / "set-k1.pt") in Path("/proc/self/maps").read_text()  # mapped, not read whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set-k1.pt", "set.lock"]  # no tmp file left


def test_a_changed_source_file_rebuilds_and_drops_the_stale_copy(tmp_path: Path, caplog) -> None:
    source = tmp_path / "img.png"
    source.write_bytes(b"one")
    key1 = fingerprint([source], {"image_size": 32})
    assert fingerprint([source], {"image_size": 64}) != key1
    load_or_build(tmp_path / "cache", "set", key1, lambda: contents(1))
    source.write_bytes(b"three")  # another size (and mtime)
    key2 = fingerprint([source], {"image_size": 32})
    assert key2 != key1
    with caplog.at_level(logging.INFO, logger="aevae.data.cache"):
        rebuilt = load_or_build(tmp_path / "cache", "set", key2, lambda: contents(2))
    assert int(rebuilt["train"]["images"][0, 0, 0, 0]) == 2
    assert "is stale" in caplog.text
    assert not (tmp_path / "cache" / f"set-{key1}.pt").exists()


def test_a_truncated_cache_is_rebuilt_with_one_log_line(tmp_path: Path, caplog) -> None:
    load_or_build(tmp_path, "set", "k", lambda: contents(3))
    path = tmp_path / "set-k.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="aevae.data.cache"):
        again = load_or_build(tmp_path, "set", "k", lambda: contents(4))
    assert int(again["train"]["images"][0, 0, 0, 0]) == 4
    assert len([r for r in caplog.records if "is damaged" in r.getMessage()]) == 1


def test_two_processes_building_at_once_decode_once_and_read_whole_files(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from pathlib import Path
        from aevae.data.cache import load_or_build
        def build():
            Path({str(tmp_path)!r}, "built-" + sys.argv[1]).touch()
            time.sleep(1.0)  # a slow decode: the other process arrives meanwhile
            return {{"x": torch.arange(1_000_000)}}
        out = load_or_build(Path({str(tmp_path / "cache")!r}), "set", "k", build)
        assert torch.equal(out["x"], torch.arange(1_000_000))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)]) for i in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert len(list(tmp_path.glob("built-*"))) == 1
    assert [p.name for p in (tmp_path / "cache").glob("*.tmp")] == []


def test_the_cache_goes_beside_writable_data_else_to_the_user_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AEVAE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "data").mkdir()
    assert cache_folder(tmp_path / "data") == (tmp_path / "data" / ".aevae_cache")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only data folder
    assert cache_folder(tmp_path / "data") == tmp_path / "xdg" / "aevae"
    monkeypatch.setenv("AEVAE_CACHE", str(tmp_path / "mine"))
    assert cache_folder(tmp_path / "data") == tmp_path / "mine"


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04garbage"])
def test_empty_or_garbage_files_are_rebuilt(tmp_path: Path, damage: bytes) -> None:
    (tmp_path / "set-k.pt").write_bytes(damage)
    assert int(load_or_build(tmp_path, "set", "k", lambda: contents(5))["train"]["images"].max()) == 5
