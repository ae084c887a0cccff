"""Temporaries of a killed writer are found and removed by the next writer of the same output."""
from __future__ import annotations

import os
import subprocess

from workflow_scripts.core.atomic import atomic_open, temp_sibling


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_the_same_output_are_removed_live_and_other_ones_kept(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    out = tmp_path / "c4-train.en_0_text_document"
    stale = [tmp_path / f".{out.name}.tmp-{dead}.bin", tmp_path / f".{out.name}.tmp-{dead}.idx",
             tmp_path / f".{out.name}.tmp-{dead}.lengths.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    folder = tmp_path / f".{out.name}.tmp-{dead}"  # a converter's half-written checkpoint folder
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "shard.distcp").write_bytes(b"partial")
    kept = [tmp_path / f".{out.name}.tmp-{live}.bin", tmp_path / f".other.tmp-{dead}.bin",
            tmp_path / f".{out.name}.extra.tmp-{dead}"]
    for path in kept:
        path.write_bytes(b"not mine to remove")
    fresh = temp_sibling(out)
    assert fresh.name == f".{out.name}.tmp-{os.getpid()}"
    assert not any(p.exists() for p in stale) and not folder.exists()
    assert all(p.exists() for p in kept)


def test_atomic_open_cleans_up_before_writing(tmp_path):
    target = tmp_path / "stats.json"
    leftover = tmp_path / f".stats.json.tmp-{_dead_pid()}"
    leftover.write_text("{")
    with atomic_open(target, "w") as handle:
        handle.write("{}")
    assert target.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]
