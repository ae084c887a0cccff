"""C4 consolidation: byte-for-byte `cat`, `zcat | head -n N`, and clear errors naming the file."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from workflow_scripts.data import c4_layout
from workflow_scripts.data import c4_consolidate
from workflow_scripts.data.c4_consolidate import (ShardVerifier, available_cores, concatenate, main, validation_subset,
                                             verify_gzip)
from workflow_scripts.core.errors import PipelineInputError


def _shards(corpus: Path, split: str) -> list[Path]:
    return sorted(corpus.glob(f"c4-{split}.*.json.gz"))


def test_train_group_is_cat_of_its_shards(demo_corpus_dir, tmp_path):
    members = c4_layout.train_group_members(1, train_shards=4, train_groups=2)
    assert members == ["c4-train.00002-of-00004.json.gz", "c4-train.00003-of-00004.json.gz"]
    shards = [demo_corpus_dir / m for m in members]
    out, manifest = tmp_path / "c4-train.en_1.json.gz", tmp_path / "c4-train.en_1.sources.json"
    concatenate(shards, out, manifest)
    expected = subprocess.run(["cat", *map(str, shards)], check=True, capture_output=True).stdout
    assert out.read_bytes() == expected
    ranges = json.loads(manifest.read_text())["sources"]
    assert [r["path"] for r in ranges] == [str(s) for s in shards]
    assert ranges[0]["start"] == 0 and ranges[-1]["end"] == len(expected)
    # Multi-member gzip: Python reads all members, i.e. every document of both shards.
    with gzip.open(out, "rt", encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 80


def test_mlperf_grouping_of_1024_shards():
    members = c4_layout.train_group_members(6, 1024, 8)
    assert members[0] == "c4-train.00768-of-01024.json.gz" and members[-1] == "c4-train.00895-of-01024.json.gz"
    assert len(members) == 128


@pytest.mark.parametrize("docs", [1, 29, 30, 31, 60])
def test_validation_subset_equals_zcat_head(demo_corpus_dir, tmp_path, docs):
    shards = _shards(demo_corpus_dir, "validation")
    out = tmp_path / f"c4-validation-{docs}-samples.en.json.gz"
    assert validation_subset(shards, docs, out) == docs
    expected = subprocess.run(
        f"zcat {' '.join(map(str, shards))} | head -n {docs}", shell=True, check=True, capture_output=True
    ).stdout
    assert gzip.decompress(out.read_bytes()) == expected


def test_validation_subset_refuses_too_few_documents(demo_corpus_dir, tmp_path):
    out = tmp_path / "c4-validation-61-samples.en.json.gz"
    with pytest.raises(PipelineInputError, match="only 60 complete lines"):
        validation_subset(_shards(demo_corpus_dir, "validation"), 61, out)
    assert list(tmp_path.iterdir()) == []


def test_non_gzip_shard_is_named(demo_corpus_dir, tmp_path, capsys):
    bad = tmp_path / "c4-train.00001-of-00002.json.gz"
    bad.write_text('{"text": "plain"}\n')
    good = _shards(demo_corpus_dir, "train")[0]
    out = tmp_path / "out.json.gz"
    assert main(["train", "--out", str(out), "--threads", "0", str(good), str(bad)]) == 2
    assert f"{bad}: not a gzip file" in capsys.readouterr().err
    assert not out.exists()


def test_truncated_validation_shard_is_named(demo_corpus_dir, tmp_path):
    shards = _shards(demo_corpus_dir, "validation")
    truncated = tmp_path / shards[0].name
    truncated.write_bytes(shards[0].read_bytes()[:-200])
    with pytest.raises(PipelineInputError, match=f"{truncated}: truncated gzip"):
        validation_subset([truncated, shards[1]], 50, tmp_path / "v.json.gz")
    assert not (tmp_path / "v.json.gz").exists()


def test_raw_dir_missing_and_extra_shards_are_named(demo_corpus_dir, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for shard in demo_corpus_dir.iterdir():
        (raw / shard.name).symlink_to(shard)
    c4_layout.check_raw_dir(raw, 4, 2)
    (raw / "c4-train.00002-of-00004.json.gz").unlink()
    (raw / "c4-train.00004-of-00005.json.gz").write_bytes(b"")
    with pytest.raises(PipelineInputError) as err:
        c4_layout.check_raw_dir(raw, 4, 2)
    assert "c4-train.00002-of-00004.json.gz" in str(err.value) and "1 missing" in str(err.value)
    assert "c4-train.00004-of-00005.json.gz" in str(err.value) and "1 unexpected" in str(err.value)


def test_shards_not_divisible_by_groups_names_the_keys():
    with pytest.raises(PipelineInputError, match=r"c4.train_shards \(1024\) is not divisible by c4.train_groups \(7\)"):
        c4_layout.group_size(1024, 7)


# ---- every raw shard decompressed and checked (CRC-32, length), in parallel ------------------------------------

def _zcat_lines(path: Path) -> int:
    return subprocess.run(f"zcat {path} | wc -l", shell=True, check=True, capture_output=True, text=True).stdout.strip()


def _damaged(tmp_path: Path, shard: Path, damage) -> Path:
    data = bytearray(shard.read_bytes())
    damage(data)
    path = tmp_path / "raw" / shard.name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def _flip(position: int):
    def damage(data: bytearray) -> None:
        data[position] ^= 0xFF
    return damage


@pytest.mark.parametrize("damage,message", [
    (lambda data: data.__delitem__(slice(-1000, None)), r"truncated gzip \(the file ends inside member 1, after \d+ "
                                                       r"decompressed bytes\)"),
    (_flip(-6), r"corrupt gzip in member 1, after \d+ decompressed bytes \(CRC-32 mismatch\)"),
    (_flip(-2), r"corrupt gzip in member 1, after \d+ decompressed bytes \(length \(ISIZE\) mismatch\)"),
    (_flip(2000), r"corrupt gzip in member 1"),
])
def test_a_damaged_raw_shard_is_named_and_nothing_is_written(demo_corpus_dir, tmp_path, capsys, damage, message):
    """The issue's case first: the second shard lost its last 1,000 bytes; its gzip header is intact, so only a full
    decompression finds it. The CLI exits 2 with one line naming that shard; no output, manifest or temporary."""
    good = _shards(demo_corpus_dir, "train")
    bad = _damaged(tmp_path, good[1], damage)
    out, manifest = tmp_path / "c4-train.en_0.json.gz", tmp_path / "c4-train.en_0.sources.json"
    code = main(["train", "--out", str(out), "--manifest", str(manifest), "--threads", "0", str(good[0]), str(bad),
                 str(good[2])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len([l for l in err if l.startswith("error:")]) == 1
    assert err[-1].startswith(f"error: {bad}: "), err[-1]
    assert re.search(message, err[-1]), err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_verification_accepts_what_gzip_accepts_and_counts_lines(tmp_path):
    """Multi-member shards, zero padding after the last member, an unterminated last line."""
    shard = tmp_path / "multi.json.gz"
    shard.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": "b"}\n') + gzip.compress(b'{"text": "c"}') + b"\0" * 512)
    check = verify_gzip(shard)
    assert (check.decompressed, check.newlines, check.lines) == (41, 2, 3)
    assert gzip.decompress(shard.read_bytes()).count(b"\n") == 2  # what Python's own reader makes of it
    garbage = tmp_path / "garbage.json.gz"
    garbage.write_bytes(gzip.compress(b"x\n") + b"trailing garbage")
    with pytest.raises(PipelineInputError, match=f"{garbage}: corrupt gzip in member 2"):
        verify_gzip(garbage)


def test_manifest_gives_each_shards_byte_and_line_range(demo_corpus_dir, tmp_path):
    shards = _shards(demo_corpus_dir, "train")
    out, manifest = tmp_path / "c4-train.en_0.json.gz", tmp_path / "c4-train.en_0.sources.json"
    concatenate(shards, out, manifest)
    sources = json.loads(manifest.read_text())["sources"]
    first = 1
    for shard, entry in zip(shards, sources):
        assert entry["path"] == str(shard) and entry["end"] - entry["start"] == shard.stat().st_size
        assert entry["first_line"] == first and str(entry["lines"]) == _zcat_lines(shard)
        first += entry["lines"]
    assert first - 1 == int(_zcat_lines(out))


def test_validation_manifest_holds_the_line_ranges_of_the_kept_lines(demo_corpus_dir, tmp_path):
    shards = _shards(demo_corpus_dir, "validation")  # 2 shards of 30 documents
    manifest = tmp_path / "v.sources.json"
    validation_subset(shards, 40, tmp_path / "v.json.gz", manifest)
    assert [(e["path"], e["first_line"], e["lines"]) for e in json.loads(manifest.read_text())["sources"]] == [
        (str(shards[0]), 1, 30), (str(shards[1]), 31, 10)]
    validation_subset(shards, 20, tmp_path / "w.json.gz", tmp_path / "w.sources.json")
    assert len(json.loads((tmp_path / "w.sources.json").read_text())["sources"]) == 1


def test_a_shard_past_the_validation_lines_is_verified_too(demo_corpus_dir, tmp_path):
    shards = _shards(demo_corpus_dir, "validation")
    bad = _damaged(tmp_path, shards[1], lambda data: data.__delitem__(slice(-100, None)))
    with pytest.raises(PipelineInputError, match=f"{bad}: truncated gzip"):
        validation_subset([shards[0], bad], 10, tmp_path / "v.json.gz")
    assert not (tmp_path / "v.json.gz").exists()


def test_shards_are_verified_in_parallel_on_at_most_the_available_cores(demo_corpus_dir, monkeypatch):
    shards = _shards(demo_corpus_dir, "train")
    names, real = [], c4_consolidate.verify_gzip

    def recording(path):
        names.append(threading.current_thread().name)
        time.sleep(0.05)  # long enough that a second worker takes the next shard
        return real(path)

    monkeypatch.setattr(c4_consolidate, "verify_gzip", recording)
    with ShardVerifier(shards, threads := 64) as verifier:
        checks = verifier.results()
    assert verifier.workers == min(threads, available_cores(), len(shards))
    assert len(set(names)) == verifier.workers and all(n.startswith("verify-gzip") for n in names)
    assert [c.newlines for c in checks] == [40] * 4
    with ShardVerifier(shards, 1) as one:
        assert one.workers == 1
