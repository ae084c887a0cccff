"""GovReport path (a): template, BOS/EOS, length filter, validation masking and the reference's batch-wise packing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflow_scripts.data import govreport_pack
from workflow_scripts.demo.demo_govreport import ReportGenerator
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.packed_parquet import IGNORE_INDEX, read_packed
from workflow_scripts.data.tokenizer_files import load_tokenizer

SEQ = 256


def _write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    pq.write_table(pa.table({"input": [r for r, _ in rows], "output": [s for _, s in rows]}), path)
    return path


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str]]:
    generator = ReportGenerator(11)
    out = []
    for i in range(70):
        report, summary = generator.row()
        # Short reports so that most fit in SEQ tokens; every 9th stays long and must be dropped.
        out.append((report if i % 9 == 0 else report.split("\n")[0][:150], summary[:60]))
    return out


def _tokenize(tokenizer, rows, eos="</s>"):
    """Independent per-example tokenization: BOS + encode(full text), as Llama 2's tokenizer(text) gives."""
    bos = tokenizer.token_to_id("<s>")
    return [[bos] + tokenizer.encode(govreport_pack.full_text(r, s, eos), add_special_tokens=False).ids for r, s in rows]


def _pack(tmp_path, tokenizer_path, rows, *, validation, num_proc, batch_size):
    data = _write_rows(tmp_path / "rows.parquet", rows)
    out, stats = tmp_path / "packed.parquet", tmp_path / "packed.stats.json"
    govreport_pack.pack_file(
        data, out, stats, tokenizer_path, seq_length=SEQ, validation=validation, num_proc=num_proc, batch_size=batch_size
    )
    ids, labels = read_packed(out)
    return ids, labels, json.loads(stats.read_text())


def test_stream_is_concatenation_minus_dropped_remainder(tmp_path, demo_tokenizer_path, rows):
    tokenizer = load_tokenizer(demo_tokenizer_path)
    examples = _tokenize(tokenizer, rows)
    kept = [e for e in examples if len(e) <= SEQ]
    assert 0 < len(kept) < len(examples)
    ids, labels, stats = _pack(tmp_path, demo_tokenizer_path, rows, validation=False, num_proc=1, batch_size=1000)
    stream = [t for e in kept for t in e]
    assert ids.shape == (len(stream) // SEQ, SEQ) and ids.dtype == np.int32
    assert ids.reshape(-1).tolist() == stream[: ids.size]
    assert np.array_equal(labels, ids)  # train: loss on every token
    assert stats["dropped_examples"] == len(examples) - len(kept)
    assert stats["dropped_remainder_tokens"] == len(stream) - ids.size
    assert stats["rows"] == len(ids) and stats["masked_tokens"] == 0


def test_validation_masks_cover_exactly_the_answer_tokens(tmp_path, demo_tokenizer_path, rows):
    tokenizer = load_tokenizer(demo_tokenizer_path)
    examples = _tokenize(tokenizer, rows)
    kept = [(e, row) for e, row in zip(examples, rows) if len(e) <= SEQ]
    ids, labels, stats = _pack(tmp_path, demo_tokenizer_path, rows, validation=True, num_proc=1, batch_size=None)
    flat_ids, flat_labels = ids.reshape(-1), labels.reshape(-1)
    eos = tokenizer.token_to_id("</s>")
    pos = 0
    checked = 0
    for example, (_report, summary) in kept:
        if pos + len(example) > len(flat_ids):
            break  # the dropped remainder
        got_ids = flat_ids[pos : pos + len(example)]
        got_labels = flat_labels[pos : pos + len(example)]
        assert got_ids.tolist() == example
        keep = got_labels != IGNORE_INDEX
        assert np.array_equal(got_labels[keep], got_ids[keep])
        # Loss tokens are the summary (with the template's leading space), nothing of the prompt, not the final </s>.
        assert tokenizer.decode(got_ids[keep].tolist(), skip_special_tokens=False) == f" {summary}"
        assert not keep[0] and not keep[-1] and got_ids[-1] == eos
        # ...and they are one contiguous run ending right before </s>.
        assert np.flatnonzero(keep).tolist() == list(range(len(example) - 1 - keep.sum(), len(example) - 1))
        pos += len(example)
        checked += 1
    assert checked >= 10
    assert stats["loss_tokens"] == int((labels != IGNORE_INDEX).sum()) > 0


@pytest.mark.parametrize("n,num_proc,batch_size", [(10, 3, 2), (7, 8, 1000), (5, 1, 2), (23, 2, 5), (4, 2, None)])
def test_map_batches_match_datasets_map(n, num_proc, batch_size):
    """The batch ranges are those datasets.Dataset.map(batched=True, num_proc, batch_size) really hands over."""
    import datasets

    def record(batch):
        return {"first": [batch["i"][0]] * len(batch["i"]), "size": [len(batch["i"])] * len(batch["i"])}

    mapped = datasets.Dataset.from_dict({"i": list(range(n))}).map(
        record, batched=True, batch_size=batch_size, num_proc=num_proc if num_proc > 1 else None
    )
    seen = sorted({(f, f + s) for f, s in zip(mapped["first"], mapped["size"])})
    assert seen == govreport_pack.map_batches(n, num_proc, batch_size)


def test_packing_equals_reference_datasets_pipeline(tmp_path, demo_tokenizer_path, rows):
    """The reference's utils.py pipeline (transformers tokenizer + datasets map/filter/group_texts) gives the same rows."""
    import datasets
    from itertools import chain

    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    base = load_tokenizer(demo_tokenizer_path)
    # The Llama 2 tokenizer's post-processor: tokenizer(text) prepends <s>.
    base.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", base.token_to_id("<s>"))])
    hf = PreTrainedTokenizerFast(tokenizer_object=base, bos_token="<s>", eos_token="</s>")
    raw = datasets.Dataset.from_dict({"input": [r for r, _ in rows], "output": [s for _, s in rows]})

    def tokenize(example, eval=False):
        texts = [f"### Summarize the following text:\n {i}\n ### Summary:\n {o}{hf.eos_token}"
                 for i, o in zip(example["input"], example["output"])]
        input_ids = hf(texts).input_ids
        if not eval:
            return {"input_ids": input_ids}
        prefixes = hf([f"### Summarize the following text:\n {i}\n ### Summary:\n" for i in example["input"]]).input_ids
        labels = []
        for out, prefix in zip(input_ids, prefixes):
            masked = out.copy()
            masked[: len(prefix)] = [-100] * len(prefix)
            masked[-1] = -100
            labels.append(masked)
        return {"input_ids": input_ids, "labels": labels}

    def group(examples, block_size=SEQ):
        joined = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = len(joined["input_ids"]) // block_size * block_size
        result = {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in joined.items()}
        if "labels" not in result:
            result["labels"] = result["input_ids"].copy()
        return result

    for validation in (False, True):
        ref = raw.map(tokenize, batched=True, num_proc=2, remove_columns=["input", "output"], fn_kwargs={"eval": validation})
        ref = ref.filter(lambda ex: [len(x) <= SEQ for x in ex["input_ids"]], batched=True, num_proc=2)
        ref = ref.map(group, batched=True, num_proc=3, batch_size=9)
        ids, labels, _ = _pack(tmp_path, demo_tokenizer_path, rows, validation=validation, num_proc=3, batch_size=9)
        assert len(ref) > 3
        assert ids.tolist() == ref["input_ids"]
        assert labels.tolist() == ref["labels"]


def test_tokenizer_without_eos_is_refused(tmp_path, demo_tokenizer_path, rows):
    data = _write_rows(tmp_path / "rows.parquet", rows[:5])
    with pytest.raises(PipelineInputError, match="'<eos>'"):
        govreport_pack.pack_file(
            data, tmp_path / "o.parquet", tmp_path / "o.json", demo_tokenizer_path,
            seq_length=SEQ, validation=False, num_proc=1, batch_size=10, eos_token="<eos>",
        )
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.jsonl", '{"input": "a report"}\n', r"missing.jsonl: line 1: missing column 'output'"),
        ("nonstring.jsonl", '{"input": "a", "output": "b"}\n{"input": 5, "output": "b"}\n',
         r"nonstring.jsonl: row 2: column 'input' is int, not a string"),
        ("empty.jsonl", "", r"empty.jsonl: empty file"),
        ("bad.jsonl", '{"input": "a", "output": "b"}\n{"input": \n', r"bad.jsonl: line 2: malformed JSON"),
        ("rows.csv", "input,output\n", r"unknown format"),
    ],
)
def test_bad_jsonl_input_names_file_row_and_column(tmp_path, demo_tokenizer_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "out" / "p.parquet"
    code = govreport_pack.main([
        "--input", str(path), "--tokenizer", str(demo_tokenizer_path), "--seq-length", str(SEQ),
        "--num-proc", "8", "--batch-size", "1000", "--bos-token", "<s>", "--eos-token", "</s>",
        "--output", str(out), "--stats", str(tmp_path / "out" / "p.stats.json"), "--threads", str(os.cpu_count()),
    ])
    assert code == 2
    with pytest.raises(PipelineInputError, match=message):
        govreport_pack.pack_file(path, out, tmp_path / "s.json", demo_tokenizer_path, seq_length=SEQ,
                                 validation=False, num_proc=1, batch_size=10)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_parquet_input(tmp_path, demo_tokenizer_path):
    cases = {
        "nocol.parquet": (pa.table({"input": ["a"], "summary": ["b"]}), r"nocol.parquet: missing column 'output'"),
        "null.parquet": (pa.table({"input": ["a", "b", None], "output": ["x", "y", "z"]}),
                         r"null.parquet: row 3: column 'input' is null"),
        "ints.parquet": (pa.table({"input": [1], "output": ["x"]}), r"column 'input' holds int64, not strings"),
        "empty.parquet": (pa.table({"input": pa.array([], pa.string()), "output": pa.array([], pa.string())}),
                          r"empty.parquet: empty file"),
    }
    for name, (table, message) in cases.items():
        pq.write_table(table, tmp_path / name)
        with pytest.raises(PipelineInputError, match=message):
            govreport_pack.pack_file(tmp_path / name, tmp_path / "o.parquet", tmp_path / "o.json", demo_tokenizer_path,
                                     seq_length=SEQ, validation=True, num_proc=1, batch_size=10)
        assert not (tmp_path / "o.parquet").exists()
