"""A tokenized .bin/.idx/.stats.json set is published as one and every reader checks it; temporaries of a killed
tokenizer are removed by the next run."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from train_fixtures import REPO
from workflow_scripts.data.c4_consolidate import concatenate
from workflow_scripts.data.c4_tokenize import tokenize_file
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.file_identity import file_identity
from workflow_scripts.data.tokenized_set import read_stats


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def inputs(demo_corpus_dir, tmp_path_factory):
    """Two different consolidated files (raw shards 0-1 and 2-3)."""
    base = tmp_path_factory.mktemp("tokenized_set")
    shards = sorted(demo_corpus_dir.glob("c4-train.*.json.gz"))
    pair = []
    for k in range(2):
        pair.append(base / f"c4-train.en_{k}.json.gz")
        concatenate(shards[2 * k:2 * k + 2], pair[-1])
    return pair


@pytest.fixture(scope="module")
def two_sets(inputs, demo_tokenizer_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("two_sets")
    prefixes = [base / f"c4-train.en_{k}_text_document" for k in range(2)]
    for data, prefix in zip(inputs, prefixes):
        tokenize_file(data, prefix, demo_tokenizer_path)
    return prefixes


def _copy_set(prefix: Path, dest: Path) -> Path:
    for ext in ("bin", "idx", "stats.json"):
        shutil.copy(f"{prefix}.{ext}", f"{dest}.{ext}")
    return dest


def test_stats_json_records_the_sizes_and_hashes_of_its_files(two_sets):
    prefix = two_sets[0]
    stats = json.loads(Path(f"{prefix}.stats.json").read_text())
    for ext in ("bin", "idx"):
        path = Path(f"{prefix}.{ext}")
        assert stats["files"][ext] == file_identity(path) and stats["files"][ext]["size"] == path.stat().st_size
    assert stats["files"]["bin"]["size"] == 2 * stats["tokens"]  # uint16
    assert read_stats(prefix) == stats


@pytest.mark.parametrize("replaced", [("bin",), ("idx",), ("bin", "idx")])
def test_a_mixed_set_is_refused_naming_the_files(two_sets, tmp_path, replaced):
    mixed = _copy_set(two_sets[0], tmp_path / "c4-train.en_0_text_document")
    for ext in replaced:
        shutil.copy(f"{two_sets[1]}.{ext}", f"{mixed}.{ext}")
    with pytest.raises(PipelineInputError) as err:
        read_stats(mixed)
    message = str(err.value)
    assert message.startswith(" and ".join(f"{mixed}.{ext}" for ext in replaced) + ": not the file")
    assert f"{mixed}.stats.json describes" in message and "\n" not in message


def test_a_set_without_stats_or_with_old_stats_is_refused(two_sets, tmp_path):
    prefix = _copy_set(two_sets[0], tmp_path / "p")
    stats = Path(f"{prefix}.stats.json")
    old = {k: v for k, v in json.loads(stats.read_text()).items() if k != "files"}
    stats.write_text(json.dumps(old))
    with pytest.raises(PipelineInputError, match=f"{stats}: no sizes and hashes of {prefix}.bin, {prefix}.idx"):
        read_stats(prefix)
    stats.unlink()
    with pytest.raises(PipelineInputError, match=f"{stats}: missing"):
        read_stats(prefix)


def test_the_trainers_data_reader_refuses_a_mixed_set(two_sets, tmp_path):
    """GPTBatches (the trainer's and the index-cache rule's reader) checks every prefix before megatron reads it."""
    from workflow_scripts.train.train_data import GPTBatches

    mixed = _copy_set(two_sets[0], tmp_path / "c4-train.en_0_text_document")
    shutil.copy(f"{two_sets[1]}.idx", f"{mixed}.idx")
    with pytest.raises(PipelineInputError, match=f"{mixed}.idx: not the file"):
        GPTBatches([str(two_sets[1])], None, str(mixed), 64, 1, 8, 8, "", 1000)


def test_the_index_cache_rule_exits_2_with_one_line_on_a_mixed_set(two_sets, tmp_path):
    mixed = _copy_set(two_sets[0], tmp_path / "c4-train.en_0_text_document")
    shutil.copy(f"{two_sets[1]}.bin", f"{mixed}.bin")
    done = tmp_path / "done.json"
    proc = subprocess.run(
        [sys.executable, "-m", "workflow_scripts.train.build_index_cache", "--recipe", "demo_pretrain_cpu",
         "--done", str(done), "--set", f"train_data=[{mixed}]", f"validation_data={two_sets[1]}", f"index_cache={tmp_path / 'cache'}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {mixed}.bin: not the file that {mixed}.stats.json")
    assert not done.exists()


def test_the_index_cache_rule_rebuilds_when_the_data_under_the_same_paths_changed(two_sets, tmp_path):
    """megatron keys its cache files by the dataset's description, not its data: a rebuild after new tokens landed
    under the same paths must not reuse the old indices (the demo's stale cache once failed with an IndexError)."""
    train = _copy_set(two_sets[0], tmp_path / "c4-train.en_6_text_document")
    valid = _copy_set(two_sets[0], tmp_path / "c4-validation_text_document")
    done, cache = tmp_path / "done.json", tmp_path / "cache"

    def build() -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "workflow_scripts.train.build_index_cache", "--recipe", "demo_pretrain_cpu",
             "--done", str(done), "--set", f"train_data=[{train}]", f"validation_data={valid}",
             f"index_cache={cache}"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
            text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(done.read_text())

    first = build()
    stale = {p.name: p.read_bytes() for p in cache.glob("*.npy")}
    for prefix in (train, valid):  # the other tokenized set, published under the same names
        _copy_set(two_sets[1], prefix)
    second = build()
    assert second["files"] == first["files"]  # same description, same names...
    assert any((cache / name).read_bytes() != data for name, data in stale.items())  # ...new indices
    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
    from workflow_scripts.train.train_config import build_config
    from workflow_scripts.train.train_data import GPTBatches

    cfg = build_config("demo_pretrain_cpu", {"train_data": [str(train)], "validation_data": str(valid),
                                             "index_cache": str(cache)})
    init_parallel(1, 1, seed=cfg.seed)
    try:  # every sample of the rebuilt cache reads within the new data (the stale one raised IndexError here)
        data = GPTBatches.for_config(cfg, 2048)
        for i in range(len(data.valid)):
            assert data.valid[i]["tokens"].shape[0] == cfg.seq_length
    finally:
        shutdown_parallel()


# A tokenizer killed after it renamed the new .bin over an old set, before the .idx: the set must not pass as complete.
_KILL_BETWEEN_RENAMES = """
import os, signal, sys
from workflow_scripts.data import c4_tokenize
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith(".bin"):
        os.kill(os.getpid(), signal.SIGKILL)
c4_tokenize.os.replace = replace
sys.exit(c4_tokenize.main(sys.argv[1:]))
"""


def test_a_tokenizer_killed_between_its_renames_leaves_a_refused_set_and_the_rerun_cleans_up(
        inputs, two_sets, demo_tokenizer_path, tmp_path):
    prefix = _copy_set(two_sets[0], tmp_path / "c4-train.en_0_text_document")  # an old complete set, overwritten
    args = ["--input", str(inputs[1]), "--output-prefix", str(prefix), "--tokenizer", str(demo_tokenizer_path),
            "--threads", str(os.cpu_count()), "--bos-token", "<s>", "--eod-token", "</s>"]
    proc = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, *args], cwd=REPO,  # with other data
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and re.fullmatch(rf"\.{re.escape(prefix.name)}\.tmp-\d+\.idx", leftovers[0]), leftovers
    assert not Path(f"{prefix}.stats.json").exists()  # removed before the renames
    with pytest.raises(PipelineInputError, match=f"{prefix}.stats.json: missing"):
        read_stats(prefix)

    tokenize_file(inputs[1], prefix, demo_tokenizer_path)  # the rerun
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{prefix.name}.{e}" for e in ("bin", "idx", "stats.json")]
    assert read_stats(prefix)["input"] == str(inputs[1])
    for ext in ("bin", "idx"):
        assert Path(f"{prefix}.{ext}").read_bytes() == Path(f"{two_sets[1]}.{ext}").read_bytes()


def test_temporaries_of_a_killed_tokenizer_are_removed_by_the_next_run(inputs, demo_tokenizer_path, tmp_path):
    """What a SIGKILL mid-run leaves (another pid's .bin, .lengths.tmp, .idx and stats.json temporaries)."""
    prefix, dead = tmp_path / "c4-train.en_0_text_document", _dead_pid()
    stale = [tmp_path / f".{prefix.name}.tmp-{dead}{suffix}" for suffix in (".bin", ".idx", ".lengths.tmp")]
    stale.append(tmp_path / f".{prefix.name}.stats.json.tmp-{dead}")
    for path in stale:
        path.write_bytes(b"partial")
    tokenize_file(inputs[0], prefix, demo_tokenizer_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{prefix.name}.{e}" for e in ("bin", "idx", "stats.json")]
