"""C4 consolidation: byte-for-byte `cat`, `zcat | head -n N`, and clear errors naming the file."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from workflow_scripts import c4_layout
from workflow_scripts.c4_consolidate import concatenate, main, validation_subset
from workflow_scripts.errors import PipelineInputError


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
    assert main(["train", "--out", str(out), str(good), str(bad)]) == 2
    assert f"{bad}: not a gzip file" in capsys.readouterr().err
    assert not out.exists()


def test_truncated_validation_shard_is_named(demo_corpus_dir, tmp_path):
    shards = _shards(demo_corpus_dir, "validation")
    truncated = tmp_path / shards[0].name
    truncated.write_bytes(shards[0].read_bytes()[:-200])
    with pytest.raises(PipelineInputError, match=f"{truncated}: unreadable gzip"):
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
