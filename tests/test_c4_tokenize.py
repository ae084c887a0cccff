"""Tokenization of consolidated C4 into .bin/.idx: reference semantics, megatron-core compatibility, bad input."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from tokenizers import Tokenizer, models, pre_tokenizers

from workflow_scripts.data.c4_consolidate import concatenate
from workflow_scripts.data.c4_tokenize import main, tokenize_file
from workflow_scripts.core.errors import PipelineInputError

# The options the c4_tokenize rule passes (config c4.bos_token, c4.eod_token), as their old argparse defaults.
RULE_FLAGS = ["--threads", str(os.cpu_count()), "--bos-token", "<s>", "--eod-token", "</s>"]


def _texts(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


@pytest.fixture(scope="module")
def consolidated(demo_corpus_dir, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("consolidated")
    shards = sorted(demo_corpus_dir.glob("c4-train.*.json.gz"))
    data, manifest = out / "c4-train.en_0.json.gz", out / "c4-train.en_0.sources.json"
    concatenate(shards, data, manifest)
    return data, manifest


def test_items_are_the_tokenizer_ids_of_each_document(consolidated, demo_tokenizer_path, tmp_path):
    data, _ = consolidated
    prefix = tmp_path / "c4-train.en_0_text_document"
    stats = tokenize_file(data, prefix, demo_tokenizer_path, batch_docs=7)
    tokenizer = Tokenizer.from_file(str(demo_tokenizer_path))
    expected = [tokenizer.encode(t, add_special_tokens=False).ids for t in _texts(data)]
    non_empty = [ids for ids in expected if ids]
    assert len(non_empty) < len(expected), "the demo corpus must contain empty documents"
    dataset = IndexedDataset(str(prefix))
    assert [dataset[i].tolist() for i in range(len(dataset))] == non_empty
    assert dataset[0].dtype == np.uint16
    assert stats["documents"] == len(non_empty) and stats["skipped_empty"] == len(expected) - len(non_empty)
    assert stats["tokens"] == sum(map(len, non_empty)) and stats["dtype"] == "uint16"
    on_disk = json.loads(Path(f"{prefix}.stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats)) and len(on_disk["tokenizer_sha256"]) == 64
    # Byte-identical to megatron-core's own builder fed the same token lists.
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    for ids in non_empty:
        builder.add_item(torch.tensor(ids))
        builder.end_document()
    builder.finalize(str(tmp_path / "ref.idx"))
    for ext in ("bin", "idx"):
        assert Path(f"{prefix}.{ext}").read_bytes() == (tmp_path / f"ref.{ext}").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bos_and_eod_switches(consolidated, demo_tokenizer_path, tmp_path):
    data, _ = consolidated
    tokenizer = Tokenizer.from_file(str(demo_tokenizer_path))
    bos, eod = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    plain, both = tmp_path / "plain", tmp_path / "both"
    tokenize_file(data, plain, demo_tokenizer_path)
    stats = tokenize_file(data, both, demo_tokenizer_path, add_bos=True, append_eod=True)
    a, b = IndexedDataset(str(plain)), IndexedDataset(str(both))
    assert len(a) == len(b) == stats["documents"]
    for i in (0, len(a) - 1):
        assert b[i].tolist() == [bos, *a[i].tolist(), eod]


def test_large_vocabulary_uses_int32(tmp_path):
    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["[UNK]"] = 70_000
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok_path = tmp_path / "tokenizer.json"
    tok.save(str(tok_path))
    data = tmp_path / "in.json.gz"
    data.write_bytes(gzip.compress(b'{"text": "w1 w69999 w3"}\n{"text": ""}\n'))
    stats = tokenize_file(data, tmp_path / "out", tmp_path)  # a folder holding tokenizer.json works too
    assert stats["dtype"] == "int32" and stats["skipped_empty"] == 1
    dataset = IndexedDataset(str(tmp_path / "out"))  # keep a reference: items are views of its mmap
    assert dataset[0].tolist() == [1, 69999, 3]


def _bad_input(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "c4-train.en_9.json.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


GOOD = b'{"text": "hello world", "url": "u"}\n'


@pytest.mark.parametrize(
    "bad_line,message",
    [
        (b'{"text": "unterminated\n', " line 3: malformed JSON"),
        (b'{"url": "no text"}\n', " line 3: no 'text' field"),
        (b'{"text": 5}\n', " line 3: 'text' is int, not a string"),
        (b'{"text": "caf\xe9"}\n', " line 3: invalid UTF-8"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, demo_tokenizer_path, capsys, bad_line, message):
    data = _bad_input(tmp_path, [GOOD, GOOD, bad_line, GOOD])
    out = tmp_path / "out" / "c4-train.en_9_text_document"
    code = main(["--input", str(data), "--output-prefix", str(out), "--tokenizer", str(demo_tokenizer_path),
                 *RULE_FLAGS, "--batch-docs", "2"])
    assert code == 2
    assert f"{data}{message}" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []  # nothing partial, not even temporary files


@pytest.mark.parametrize("bad_line,message", [
    (b'{"text": "unterminated\n', "malformed JSON"),
    (b'{"url": "no text"}\n', "no 'text' field"),
    (b'{"text": "caf\xe9"}\n', "invalid UTF-8"),
])
def test_bad_lines_name_the_raw_shard_and_its_line(demo_corpus_dir, demo_tokenizer_path, tmp_path, capsys, bad_line,
                                                  message):
    """Line 5 of the third raw shard is bad (its gzip stream is fine, so consolidation passes it): the error names
    the consolidated file's line and, from the manifest, the raw shard's."""
    raw = sorted(demo_corpus_dir.glob("c4-train.*.json.gz"))
    lines = gzip.decompress(raw[2].read_bytes()).splitlines(keepends=True)
    bad = tmp_path / "raw" / raw[2].name
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(b"".join([*lines[:4], bad_line, *lines[5:]])))
    shards = [raw[0], raw[1], bad, raw[3]]
    data, manifest = tmp_path / "c4-train.en_0.json.gz", tmp_path / "c4-train.en_0.sources.json"
    concatenate(shards, data, manifest)
    before = sum(len(gzip.decompress(s.read_bytes()).splitlines()) for s in shards[:2])
    out = tmp_path / "out" / "c4-train.en_0_text_document"
    code = main(["--input", str(data), "--output-prefix", str(out), "--tokenizer", str(demo_tokenizer_path),
                 *RULE_FLAGS, "--sources", str(manifest), "--batch-docs", "16"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith(f"error: {data} line {before + 5} (raw shard {bad} line 5): {message}"), last
    assert list(out.parent.iterdir()) == []


def test_truncated_gzip_names_the_raw_shard(consolidated, demo_tokenizer_path, tmp_path):
    data, manifest = consolidated
    sources = json.loads(manifest.read_text())["sources"]
    cut = sources[-1]["start"] + 3000  # inside the last raw shard
    truncated = tmp_path / data.name
    truncated.write_bytes(data.read_bytes()[:cut])
    with pytest.raises(PipelineInputError, match="unreadable gzip") as err:
        tokenize_file(truncated, tmp_path / "out" / "p", demo_tokenizer_path, sources=sources)
    assert sources[-1]["path"] in str(err.value)
    assert not any((tmp_path / "out").iterdir())


def test_wrong_tokenizer_is_named(consolidated, tmp_path):
    data, _ = consolidated
    not_a_tokenizer = tmp_path / "tokenizer.json"
    not_a_tokenizer.write_text('{"model": "nonsense"}')
    with pytest.raises(PipelineInputError, match=f"{not_a_tokenizer} is not a valid tokenizer.json"):
        tokenize_file(data, tmp_path / "p", not_a_tokenizer)
    with pytest.raises(PipelineInputError, match="does not exist"):
        tokenize_file(data, tmp_path / "p", tmp_path / "missing")


def test_tokenizer_without_eod_token_is_refused(consolidated, demo_tokenizer_path, tmp_path):
    data, _ = consolidated
    with pytest.raises(PipelineInputError, match="no token '<|endoftext|>', needed for c4.append_eod"):
        tokenize_file(data, tmp_path / "p", demo_tokenizer_path, append_eod=True, eod_token="<|endoftext|>")
    assert list(tmp_path.iterdir()) == []


def _peak_rss_mib(data: Path, tokenizer: Path, out: Path) -> float:
    import resource
    import subprocess
    import sys

    code = (
        "import resource, sys; from workflow_scripts.data.c4_tokenize import main; "
        "rc = main(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    args = ["--input", str(data), "--output-prefix", str(out), "--tokenizer", str(tokenizer), *RULE_FLAGS,
            "--batch-docs", "50"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return int(proc.stdout.split()[-1]) / 1024


def test_memory_does_not_grow_with_input_size(demo_tokenizer_path, tmp_path):
    """Streaming: 8x more documents cost (almost) no more memory; lengths are spilled to disk, batches are fixed."""
    from workflow_scripts.demo.demo_c4_corpus import DocumentGenerator, write_shard

    small, large = tmp_path / "small.json.gz", tmp_path / "large.json.gz"
    write_shard(small, DocumentGenerator(1), 200, 0)
    write_shard(large, DocumentGenerator(1), 1600, 0)
    rss_small = _peak_rss_mib(small, demo_tokenizer_path, tmp_path / "small_text_document")
    rss_large = _peak_rss_mib(large, demo_tokenizer_path, tmp_path / "large_text_document")
    print(f"peak RSS {rss_small:.0f} MiB for 200 docs, {rss_large:.0f} MiB for 1600 docs")
    assert rss_large - rss_small < 64, (rss_small, rss_large)
    assert rss_large < 2048


def test_an_error_in_the_reader_thread_fails_the_job_with_its_message(consolidated, demo_tokenizer_path, tmp_path,
                                                                        monkeypatch):
    """The reader runs in a prefetch thread: a read error there (a bad disk, after some batches went through) reaches
    the job as itself, and nothing is published."""
    import errno
    import threading

    from workflow_scripts.data import c4_tokenize

    data, _ = consolidated
    real, seen = c4_tokenize.read_documents, []

    def failing_reader(path, *args, **kwargs):
        batches = real(path, *args, **kwargs)
        yield next(batches)
        seen.append(threading.current_thread())
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(c4_tokenize, "read_documents", failing_reader)
    out = tmp_path / "out" / "c4-train.en_0_text_document"
    with pytest.raises(OSError, match=f"Input/output error: '{data}'"):
        main(["--input", str(data), "--output-prefix", str(out), "--tokenizer", str(demo_tokenizer_path),
              *RULE_FLAGS, "--batch-docs", "5"])
    assert seen and seen[0] is not threading.main_thread()
    assert list(out.parent.iterdir()) == []
