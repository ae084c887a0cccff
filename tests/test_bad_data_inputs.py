"""Bad data inputs end with exit 2 and one line naming the file and the row, line or sample, and leave no output:
text that is not UTF-8 in parquet, lone surrogates in JSON lines, Git LFS pointers, cut or mistyped .npy / parquet
files, and token ids outside the vocabulary (training rows, accuracy logs, prompts)."""
from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train_fixtures import SEQ, TINY, make_model, packed_rows, train_cli
from workflow_scripts.data import c4_tokenize
from workflow_scripts.data import govreport_npy
from workflow_scripts.data import govreport_pack
from workflow_scripts.data import openorca_filter
from workflow_scripts.scoring import rouge_score_eval
from workflow_scripts.inference.accuracy_log import read_accuracy_log, write_accuracy_log
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.inference.generate import read_prompts
from workflow_scripts.data.govreport_rows import iter_rows
from workflow_scripts.core.lfs_pointer import SPEC_LINE
from workflow_scripts.core.parquet_input import open_parquet
from workflow_scripts.data.tokenizer_files import load_tokenizer
from workflow_scripts.train.train_data import load_packed
from workflow_scripts.data.ultrachat_pack import iter_texts

LFS_POINTER = SPEC_LINE + b"\noid sha256:" + b"0" * 64 + b"\nsize 1234567\n"


def _strings(values: list[bytes]) -> pa.Array:
    """A string array holding the bytes as they are: pyarrow checks UTF-8 only when asked, parquet never."""
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()),
                                                            pa.py_buffer(b"".join(values))])


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def _empty_or_absent(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# ---- 1. parquet text that is not UTF-8 -----------------------------------------------------------------------------

def test_govreport_parquet_with_invalid_utf8_names_file_row_and_column(tmp_path, demo_tokenizer_path, capsys):
    source = tmp_path / "rows.parquet"
    reports = _strings([b"first report", b"second report", b"third \xff report", b"fourth report"])
    pq.write_table(pa.table({"input": reports, "output": ["a summary"] * 4}), source)
    out = tmp_path / "out"
    code = govreport_pack.main(["--input", str(source), "--tokenizer", str(demo_tokenizer_path), "--seq-length", "64",
                                "--num-proc", "8", "--batch-size", "1000", "--bos-token", "<s>", "--eos-token", "</s>",
                                "--output", str(out / "p.parquet"), "--stats", str(out / "p.stats.json"),
                                "--threads", str(os.cpu_count())])
    expected = f"{source}: row 3: column 'input' is not valid UTF-8 (invalid start byte at byte 6)"
    assert code == 2 and _error_line(capsys) == f"error: {expected}"
    assert _empty_or_absent(out)
    with pytest.raises(PipelineInputError) as err:  # the row number holds in a later batch too
        list(iter_rows(source, batch_rows=2))
    assert str(err.value) == expected


def test_openorca_parquet_with_invalid_utf8_names_file_row_and_column(tmp_path, demo_tokenizer_path, capsys):
    source = tmp_path / "orca.parquet"
    responses = _strings([b"It is four."] * 5 + [b"Vier \xc3("] + [b"It is four."])
    pq.write_table(pa.table({"id": [f"cot.{i}" for i in range(7)], "system_prompt": ["You are helpful."] * 7,
                             "question": ["What is two plus two?"] * 7, "response": responses}), source)
    out = tmp_path / "out"
    code = openorca_filter.main(["--input", str(source), "--tokenizer", str(demo_tokenizer_path), "--output",
                                 str(out / "full.parquet"), "--stats", str(out / "s.json"),
                                 "--seqlen-limit", "1024", "--bos-token", "<s>", "--response-init-token", "Ġ",
                                 "--threads", str(os.cpu_count()), "--batch-rows", "4"])
    assert code == 2
    assert _error_line(capsys) == (f"error: {source}: row 5 (0-based): column 'response' is not valid UTF-8 "
                                   "(invalid continuation byte at byte 5)")
    assert _empty_or_absent(out)  # the first batch was written to a temporary, now removed


def test_ultrachat_message_with_invalid_utf8_names_file_and_row(tmp_path):
    content = _strings([b"hi", b"hello", b"caf\xe9?", b"yes"])
    messages = pa.StructArray.from_arrays([pa.array(["user", "assistant"] * 2), content], names=["role", "content"])
    source = tmp_path / "chat.parquet"
    pq.write_table(pa.table({"messages": pa.ListArray.from_arrays(pa.array([0, 2, 4], pa.int32()), messages)}),
                   source)
    with pytest.raises(PipelineInputError) as err:
        list(iter_texts([source]))
    assert str(err.value) == f"{source}: row 2: column 'messages' is not valid UTF-8 (invalid continuation byte at byte 3)"


def test_damaged_parquet_page_names_the_file_and_first_unread_row(tmp_path, capsys):
    """A page header overwritten (a damaged copy): pyarrow's multi-line thrift error comes out as one line."""
    seq = 16
    rows = [list(range(seq))] * 600
    source = tmp_path / "packed.parquet"
    pq.write_table(pa.table({"input_ids": pa.array(rows, pa.list_(pa.int32())),
                             "labels": pa.array(rows, pa.list_(pa.int64()))}), source, row_group_size=256)
    damaged = bytearray(source.read_bytes())
    page = pq.ParquetFile(source).metadata.row_group(1).column(0).data_page_offset
    damaged[page:page + 40] = b"\xff" * 40
    source.write_bytes(bytes(damaged))
    out = tmp_path / "out"
    code = govreport_npy.main(["--input", str(source), "--output", str(out / "t.npy"), "--stats",
                               str(out / "t.json"), "--seq-length", str(seq)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {source}: unreadable from row 257 (")
    assert _empty_or_absent(out)


# ---- 2. lone surrogates in JSON lines ------------------------------------------------------------------------------

def _c4_file(path, lines: list[bytes]):
    with gzip.open(path, "wb") as handle:
        handle.writelines(lines)
    return path


def test_c4_line_with_a_lone_surrogate_names_file_and_line(tmp_path, demo_tokenizer_path, capsys):
    good = b'{"text": "hello world", "url": "u"}\n'
    data = _c4_file(tmp_path / "c4.json.gz", [good, good, b'{"text": "broken \\ud800 text"}\n', good])
    out = tmp_path / "out" / "c4_text_document"
    code = c4_tokenize.main(["--input", str(data), "--output-prefix", str(out), "--tokenizer",
                             str(demo_tokenizer_path), "--threads", str(os.cpu_count()), "--bos-token", "<s>",
                             "--eod-token", "</s>", "--batch-docs", "2"])
    assert code == 2
    assert _error_line(capsys) == (f"error: {data} line 3: 'text' holds a lone surrogate \\ud800 at character 7, "
                                   "not Unicode text")
    assert _empty_or_absent(out.parent)


def test_c4_surrogate_pairs_and_escaped_backslashes_are_text(tmp_path):
    pair = b'{"text": "smile \\ud83d\\ude00"}\n'
    literal = b'{"text": "a literal \\\\ud800"}\n'  # an escaped backslash followed by "ud800"
    data = _c4_file(tmp_path / "c4.json.gz", [pair, literal])
    [batch] = list(c4_tokenize.read_documents(data))
    assert batch.texts == ["smile \U0001F600", "a literal \\ud800"]


def test_govreport_jsonl_with_a_lone_surrogate_names_file_line_and_column(tmp_path, demo_tokenizer_path, capsys):
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"input": "a report", "output": "a summary"}\n'
                       b'{"input": "a report", "output": "cut \\uDC00 summary"}\n')
    out = tmp_path / "out"
    code = govreport_pack.main(["--input", str(source), "--tokenizer", str(demo_tokenizer_path), "--seq-length", "64",
                                "--num-proc", "8", "--batch-size", "1000", "--bos-token", "<s>", "--eos-token", "</s>",
                                "--output", str(out / "p.parquet"), "--stats", str(out / "p.stats.json"),
                                "--threads", str(os.cpu_count())])
    assert code == 2
    assert _error_line(capsys) == (f"error: {source}: line 2: column 'output' holds a lone surrogate \\udc00 at "
                                   "character 4, not Unicode text")
    assert _empty_or_absent(out)


# ---- 3. Git LFS pointers in place of data files --------------------------------------------------------------------

@pytest.mark.parametrize("name,read", [
    ("tokenizer.json", load_tokenizer),
    ("data.parquet", open_parquet),
    ("train.npy", lambda path: load_packed(path, 1000)),
])
def test_lfs_pointer_in_place_of_a_data_file_is_named(tmp_path, name, read):
    path = tmp_path / name
    path.write_bytes(LFS_POINTER)
    with pytest.raises(PipelineInputError) as err:
        read(path)
    assert str(err.value) == (f"{path}: a Git LFS pointer, not the file itself (run `git lfs pull` in the repository "
                              "it came from)")


# ---- 5. cut, empty or mistyped training files ----------------------------------------------------------------------

def _mlperf_rows(path, rows: int = 4, seq: int = 8, high: int = 1000, dtype=np.int32):
    out = np.empty(rows, dtype=object)
    for i in range(rows):
        ids = (np.arange(seq) * 7 + i) % high
        out[i] = {"input_ids": ids.astype(dtype), "loss_mask": [1] * seq, "seq_start_id": [0]}
    np.save(path, out, allow_pickle=True)
    return path


def _cut(path, keep: float = 0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: _cut(_mlperf_rows(p)), "not a readable .npy file, truncated or damaged"),
    (lambda p: (np.save(p, np.arange(4000, dtype=np.int64)), _cut(p)), "not a readable .npy file, truncated or damaged"),
    (lambda p: p.write_bytes(b""), "not a readable .npy file, truncated or damaged"),
    (lambda p: np.save(p, np.zeros((3, 8), np.int64)), "holds an array of int64, shape (3, 8), not MLPerf packed rows"),
    (lambda p: _mlperf_rows(p, dtype=np.float32), "input_ids hold float32 values, not integers"),
    (lambda p: np.save(p, np.empty(0, dtype=object), allow_pickle=True), "no rows"),
])
def test_bad_npy_training_file_is_named(tmp_path, make, message):
    path = tmp_path / "train.npy"
    make(path)
    with pytest.raises(PipelineInputError) as err:
        load_packed(path, 1000)
    assert str(err.value).startswith(f"{path}: {message}")


def test_cut_or_empty_packed_parquet_is_named(tmp_path):
    path = tmp_path / "train.parquet"
    rows = pa.array([[1, 2, 3]] * 50, pa.list_(pa.int32()))
    pq.write_table(pa.table({"input_ids": rows, "labels": rows.cast(pa.list_(pa.int64()))}), path)
    _cut(path)
    with pytest.raises(PipelineInputError, match="^" + str(path) + ": not a readable packed parquet file"):
        load_packed(path, 1000)
    empty = pa.array([], pa.list_(pa.int32()))
    pq.write_table(pa.table({"input_ids": empty, "labels": empty.cast(pa.list_(pa.int64()))}), path)
    with pytest.raises(PipelineInputError, match="^" + str(path) + ": no rows$"):
        load_packed(path, 1000)


# ---- 6. token ids outside the vocabulary ---------------------------------------------------------------------------

def test_training_row_with_an_id_outside_the_vocabulary_is_named(tmp_path):
    path = _mlperf_rows(tmp_path / "train.npy", rows=4, seq=8, high=1000)
    assert len(load_packed(path, 1000)) == 4  # ids 0..999 are all inside
    rows = np.load(path, allow_pickle=True)
    rows[2]["input_ids"][5] = 1000
    np.save(path, rows, allow_pickle=True)
    with pytest.raises(PipelineInputError) as err:
        load_packed(path, 1000)
    assert str(err.value) == (f"{path}: row 2 (0-based), position 5: token id 1000 is outside the model's vocabulary "
                              "(0..999)")


def test_negative_id_in_packed_parquet_is_named(tmp_path):
    path = tmp_path / "train.parquet"
    ids = pa.array([[1, 2, 3], [4, -7, 6]], pa.list_(pa.int32()))
    pq.write_table(pa.table({"input_ids": ids, "labels": ids.cast(pa.list_(pa.int64()))}), path)
    with pytest.raises(PipelineInputError, match=r": row 1 \(0-based\), position 1: token id -7 is outside"):
        load_packed(path, 10)


def test_accuracy_log_id_outside_the_tokenizer_is_refused_not_dropped(tmp_path, demo_tokenizer_path, capsys):
    vocab = load_tokenizer(demo_tokenizer_path).get_vocab_size(with_added_tokens=True)
    samples = tmp_path / "samples.pkl"
    pd.DataFrame({"output": ["an answer", "another answer"], "tok_input": [[1, 2]] * 2}).to_pickle(samples)
    log_path = tmp_path / "acc.json"
    write_accuracy_log(log_path, [(0, [5, 6]), (1, [7, vocab, 8])])
    assert read_accuracy_log(log_path)[1] == [7, vocab, 8]  # without a vocabulary the reader cannot tell
    out = tmp_path / "rouge.json"
    code = rouge_score_eval.main(["--samples", str(samples), "--accuracy-log", str(log_path), "--tokenizer",
                                  str(demo_tokenizer_path), "--out", str(out), "--threads", "1", "--limit", "0"])
    assert code == 2
    assert _error_line(capsys) == (f"error: {log_path}: entry 1 (qsl_idx 1): token id {vocab} is outside the "
                                   f"tokenizer's vocabulary (0..{vocab - 1})")
    assert not out.exists()
    write_accuracy_log(log_path, [(0, [5, -1])])
    with pytest.raises(PipelineInputError, match=r"entry 0 \(qsl_idx 0\): token id -1 is outside"):
        read_accuracy_log(log_path, vocab_size=vocab)


def test_prompt_id_outside_the_model_vocabulary_is_named(tmp_path):
    samples = tmp_path / "samples.pkl"
    pd.DataFrame({"tok_input": [[1, 2, 3], [4, 50, 6]]}).to_pickle(samples)
    assert read_prompts(samples, 51) == [[1, 2, 3], [4, 50, 6]]
    with pytest.raises(PipelineInputError) as err:
        read_prompts(samples, 50)
    assert str(err.value) == f"{samples}: row 1: tok_input holds token id 50, outside the model's vocabulary (0..49)"


def test_trainer_refuses_rows_outside_the_vocabulary_with_one_line(tmp_path):
    _, mcore = make_model(tmp_path)
    train = packed_rows(tmp_path / "train.npy", 8, seed=1)
    rows = np.load(train, allow_pickle=True)
    rows[3]["input_ids"][0] = TINY.vocab_size
    np.save(train, rows, allow_pickle=True)
    proc = train_cli(tmp_path / "run", tmp_path / "ckpt", f"checkpoint={mcore}", f"train_data=[{train}]",
                     f"seq_length={SEQ}", "global_batch_size=4", "micro_batch_size=2", "max_steps=1", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {train}: row 3 (0-based), position 0: token id {TINY.vocab_size} is outside the model's vocabulary "
        f"(0..{TINY.vocab_size - 1})")
