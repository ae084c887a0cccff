"""OpenOrca filtering: per-filter counts against the demo generator's plan, the row rules, and refused input."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflow_scripts.data import openorca_filter
from workflow_scripts.demo.demo_openorca import generate_rows, write_demo_parquet
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.openorca_filter import filter_parquet
from workflow_scripts.data.openorca_rules import first_failed_filter, is_english, llama_prompt, origin_of
from workflow_scripts.data.openorca_tokens import OrcaTokenizer


def _filter(parquet, tokenizer, out, **kw):
    return filter_parquet(parquet, tokenizer, out / "full.parquet", out / "filter.json", response_init_token="Ġ", **kw)


def _write(path, columns: dict):
    pq.write_table(pa.table(columns), path)
    return path


def _good_columns(n=4):
    return {
        "id": [f"cot.{i}" for i in range(n)],
        "system_prompt": ["You are helpful."] * n,
        "question": ["What is two plus two?"] * n,
        "response": ["It is four, of course."] * n,
    }


def test_each_filter_removes_exactly_the_planted_rows(tmp_path, demo_tokenizer_path):
    parquet = tmp_path / "demo.parquet"
    plan = write_demo_parquet(parquet, rows_per_origin=30, seed=5)
    assert all(plan["removed"][name] > 0 for name in plan["removed"] if name != "keyphrase")
    stats = _filter(parquet, demo_tokenizer_path, tmp_path, batch_rows=50)
    assert stats["removed"] == plan["removed"]
    assert stats["kept_per_origin"] == plan["kept_per_origin"] and set(plan["kept_per_origin"]) == {"cot", "flan", "niv", "t0"}
    assert stats["rows"] == plan["rows"] and stats["kept"] == plan["rows"] - sum(plan["removed"].values())
    assert json.loads((tmp_path / "filter.json").read_text()) == stats
    kept = pq.read_table(tmp_path / "full.parquet")
    assert kept.num_rows == stats["kept"]
    assert kept.column_names == ["id", "system_prompt", "question", "output", "input", "tok_input", "tok_output",
                                 "origin", "tok_input_length", "tok_output_length"]
    # Input order is kept (the reference filters with boolean masks).
    rows, _ = generate_rows(30, 5)
    ids = [row["id"] for row in rows]
    kept_ids = kept.column("id").to_pylist()
    assert kept_ids == sorted(kept_ids, key=ids.index)


def test_demo_generator_is_deterministic(tmp_path):
    assert generate_rows(10, 3) == generate_rows(10, 3)
    assert generate_rows(10, 3)[0] != generate_rows(10, 4)[0]


def test_prompt_origin_and_english_rules():
    assert llama_prompt("Be brief.", "Why?") == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhy? [/INST]"
    assert llama_prompt("", "Why?") == "<s>[INST] Why? [/INST]"
    assert origin_of("t0.12.3") == "t0" and origin_of("niv") == "niv"
    assert is_english("plain ’quotes’ – “and” — dashes")
    assert not is_english("café") and not is_english("‘single open quote’") and not is_english("…")


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(input_length=1023, output_length=1023), None),
        (dict(input_length=1024, output_length=3), "input_too_long"),
        (dict(input_length=10, output_length=1024), "output_too_long"),
        (dict(input_length=10, output_length=2), "short_output"),
        (dict(input_length=2000, output_length=2), "input_too_long"),  # first failing filter wins
        (dict(input_length=10, output_length=3, origin="niv", system_prompt=""), "bad_system_prompt"),
        (dict(input_length=10, output_length=3, origin="cot", system_prompt=""), None),
        (dict(english=False, input_length=5000, output_length=0), "non_english"),
    ],
)
def test_filter_order_and_strict_limits(kwargs, expected):
    args = dict(english=True, origin="t0", system_prompt="You are helpful.") | kwargs
    assert first_failed_filter(**args) == expected


def test_tokens_get_two_bos_on_input_one_on_output(demo_tokenizer_path):
    tokenizer = OrcaTokenizer(demo_tokenizer_path, "<s>", "Ġ")
    [tok_in] = tokenizer.encode_inputs([llama_prompt("", "Hi there")])
    [tok_out] = tokenizer.encode_outputs(["Hello world"])
    body = tokenizer.tokenizer.encode("[INST] Hi there [/INST]", add_special_tokens=False).ids
    assert tok_in == [tokenizer.bos_id, tokenizer.bos_id, *body, tokenizer.response_init_id]
    assert tok_out == [tokenizer.bos_id, *tokenizer.tokenizer.encode("Hello world", add_special_tokens=False).ids]


def test_tokenizer_without_the_tokens_is_refused(demo_tokenizer_path):
    with pytest.raises(PipelineInputError, match="openorca.response_init_token"):
        OrcaTokenizer(demo_tokenizer_path, "<s>", "▁")  # Llama's token, absent from a byte-level BPE
    with pytest.raises(PipelineInputError, match="openorca.bos_token"):
        OrcaTokenizer(demo_tokenizer_path, "<bos>", "Ġ")


def _assert_nothing_left(out):
    assert sorted(p.name for p in out.iterdir() if p.name != "in.parquet") == []


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b""), "in.parquet: empty file"),
        (lambda p: p.write_text("id,question\n1,2\n"), "in.parquet: not a readable parquet file"),
        (lambda p: _write(p, {k: v for k, v in _good_columns().items() if k != "response"}), "in.parquet: no column 'response'"),
        (lambda p: _write(p, {k: v[:0] for k, v in _good_columns().items()}), "in.parquet: no rows"),
        (lambda p: _write(p, _good_columns() | {"question": [1, 2, 3, 4]}),
         "in.parquet: row 0 (0-based): column 'question' is int (int64), not a string"),
    ],
)
def test_bad_input_is_named_and_leaves_nothing(tmp_path, demo_tokenizer_path, make, message):
    out = tmp_path / "out"
    out.mkdir()
    source = out / "in.parquet"
    make(source)
    with pytest.raises(PipelineInputError) as err:
        _filter(source, demo_tokenizer_path, out)
    assert str(err.value).startswith(str(tmp_path)) and message in str(err.value)
    _assert_nothing_left(out)


def test_null_in_a_late_batch_names_its_row_and_removes_the_partial_output(tmp_path, demo_tokenizer_path):
    out = tmp_path / "out"
    out.mkdir()
    columns = _good_columns(10)
    columns["response"][7] = None
    source = _write(out / "in.parquet", columns)
    with pytest.raises(PipelineInputError, match=r"in\.parquet: row 7 \(0-based\): column 'response' is null"):
        _filter(source, demo_tokenizer_path, out, batch_rows=3)  # two batches were written before the bad one
    _assert_nothing_left(out)


def test_cli_exits_2_with_one_line(tmp_path, demo_tokenizer_path, capsys):
    source = tmp_path / "in.parquet"
    source.write_bytes(b"")
    code = openorca_filter.main(["--input", str(source), "--tokenizer", str(demo_tokenizer_path), "--output",
                                 str(tmp_path / "f.parquet"), "--stats", str(tmp_path / "s.json"),
                                 "--seqlen-limit", "1024", "--bos-token", "<s>", "--response-init-token", "Ġ",
                                 "--threads", str(os.cpu_count())])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"error: {source}: empty file"
