"""Tokenize and filter the OpenOrca `1M-GPT4-Augmented.parquet` as processorca.py does (the full filtered set).

Reads the parquet in record batches (memory bounded by the batch, not the million rows), builds the Llama 2 chat
prompt, tokenizes (openorca_tokens.py), applies the reference filters in order (openorca_rules.py) and streams the
kept rows, in input order, to a parquet with the reference's columns. Rows that fail the English check are not
tokenized: they are removed before any token count is looked at, so the result is the same.

CLI: python -m workflow_scripts.data.openorca_filter --input 1M-GPT4-Augmented.parquet --tokenizer T --output FULL.parquet
                                             --stats filter_stats.json --seqlen-limit 1024 --bos-token '<s>'
                                             --response-init-token '▁' --threads N
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.core.atomic import temp_sibling, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import refuse_lfs_pointer
from workflow_scripts.data.openorca_rules import FILTERS, SEQLEN_LIMIT, empty_counts, first_failed_filter, is_english, llama_prompt, origin_of
from workflow_scripts.data.openorca_tokens import OrcaTokenizer
from workflow_scripts.core.parquet_input import column_values
from workflow_scripts.core.progress import Progress
from workflow_scripts.data.tokenizer_files import tokenizer_sha256

log = logging.getLogger("openorca_filter")
BATCH_ROWS = 8192
SOURCE_COLUMNS = ("id", "system_prompt", "question", "response")  # `response` becomes `output`, as in the reference
TOKENS = pa.list_(pa.int32())
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("system_prompt", pa.string()), ("question", pa.string()), ("output", pa.string()),
    ("input", pa.string()), ("tok_input", TOKENS), ("tok_output", TOKENS), ("origin", pa.string()),
    ("tok_input_length", pa.int64()), ("tok_output_length", pa.int64()),
])


def open_source(path: Path) -> pq.ParquetFile:
    """The parquet, refused with its name when missing, empty, unreadable, without a needed column or without rows."""
    if not path.is_file():
        raise PipelineInputError(f"{path}: no such file (openorca.parquet)")
    if path.stat().st_size == 0:
        raise PipelineInputError(f"{path}: empty file")
    refuse_lfs_pointer(path)
    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise PipelineInputError(f"{path}: not a readable parquet file ({err})") from err
    names = source.schema_arrow.names
    for column in SOURCE_COLUMNS:
        if column not in names:
            raise PipelineInputError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
    if source.metadata.num_rows == 0:
        raise PipelineInputError(f"{path}: no rows")
    return source


def _string_column(path: Path, batch: pa.RecordBatch, name: str, first_row: int) -> list[str]:
    """The column as Python strings; a null or a non-string value fails naming its 0-based row."""
    array = batch.column(name)
    is_text = pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type)
    values = column_values(path, array, name, first_row, " (0-based)")
    if is_text and array.null_count == 0:
        return values
    for offset, value in enumerate(values):
        if not isinstance(value, str):
            kind = "null" if value is None else f"{type(value).__name__} ({array.type})"
            raise PipelineInputError(f"{path}: row {first_row + offset} (0-based): column {name!r} is {kind}, not a string")
    return values  # a string-like type that pyarrow reports otherwise


def read_rows(path: Path, source: pq.ParquetFile, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, dict[str, list[str]]]]:
    """Yield (first row number, {column: strings}) per record batch."""
    first_row = 0
    try:
        for batch in source.iter_batches(batch_size=batch_rows, columns=list(SOURCE_COLUMNS)):
            yield first_row, {name: _string_column(path, batch, name, first_row) for name in SOURCE_COLUMNS}
            first_row += batch.num_rows
    except (pa.ArrowException, OSError) as err:
        raise PipelineInputError(f"{path}: unreadable after row {first_row} ({err})") from err


def filter_batch(cols: dict[str, list[str]], tokenizer: OrcaTokenizer, removed: Counter, seqlen_limit: int) -> pa.RecordBatch:
    """Apply the reference rules to one batch; counts removals into `removed`, returns the kept rows."""
    ids, systems, questions, outputs = (cols[name] for name in SOURCE_COLUMNS)
    inputs = [llama_prompt(s, q) for s, q in zip(systems, questions)]
    english = [i for i in range(len(ids)) if is_english(inputs[i]) and is_english(outputs[i])]
    removed["non_english"] += len(ids) - len(english)
    tok_inputs = tokenizer.encode_inputs([inputs[i] for i in english])
    tok_outputs = tokenizer.encode_outputs([outputs[i] for i in english])
    kept: list[int] = []
    kept_in: list[list[int]] = []
    kept_out: list[list[int]] = []
    for i, tok_in, tok_out in zip(english, tok_inputs, tok_outputs):
        failed = first_failed_filter(
            english=True, input_length=len(tok_in), output_length=len(tok_out),
            origin=origin_of(ids[i]), system_prompt=systems[i], seqlen_limit=seqlen_limit,
        )
        if failed:
            removed[failed] += 1
        else:
            kept.append(i)
            kept_in.append(tok_in)
            kept_out.append(tok_out)
    columns = [
        [ids[i] for i in kept], [systems[i] for i in kept], [questions[i] for i in kept], [outputs[i] for i in kept],
        [inputs[i] for i in kept], kept_in, kept_out, [origin_of(ids[i]) for i in kept],
        [len(t) for t in kept_in], [len(t) for t in kept_out],
    ]
    return pa.RecordBatch.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, OUTPUT_SCHEMA)], schema=OUTPUT_SCHEMA
    )


def filter_parquet(
    source_path: Path,
    tokenizer_path: Path,
    output: Path,
    stats_path: Path,
    *,
    seqlen_limit: int = SEQLEN_LIMIT,
    bos_token: str = "<s>",
    response_init_token: str = "▁",
    batch_rows: int = BATCH_ROWS,
) -> dict:
    """Write the filtered rows to `output` (parquet) and the per-filter counts to `stats_path`; returns the stats."""
    source = open_source(source_path)
    tokenizer = OrcaTokenizer(tokenizer_path, bos_token, response_init_token)
    total = source.metadata.num_rows
    removed: Counter = Counter(empty_counts())
    rows_per_origin: Counter = Counter()
    kept_per_origin: Counter = Counter()
    done = kept = 0
    progress = Progress(log, f"filter {source_path.name}", total)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(output)
    try:
        with pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
            for first_row, cols in read_rows(source_path, source, batch_rows):
                rows_per_origin.update(origin_of(i) for i in cols["id"])
                batch = filter_batch(cols, tokenizer, removed, seqlen_limit)
                writer.write_batch(batch)
                kept_per_origin.update(batch.column("origin").to_pylist())
                done, kept = first_row + len(cols["id"]), kept + batch.num_rows
                progress.update(done, rows=done, kept=kept)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    progress.update(done, force=True, rows=done, kept=kept)
    stats = {
        "input": str(source_path),
        "rows": done,
        "kept": kept,
        "removed": {name: removed[name] for name in FILTERS},
        "rows_per_origin": dict(sorted(rows_per_origin.items())),
        "kept_per_origin": dict(sorted(kept_per_origin.items())),
        "seqlen_limit": seqlen_limit,
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": tokenizer_sha256(tokenizer_path),
        "bos_id": tokenizer.bos_id,
        "response_init_id": tokenizer.response_init_id,
    }
    write_json(stats_path, stats)
    return stats


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="1M-GPT4-Augmented.parquet")
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json or a folder holding one")
    parser.add_argument("--output", type=Path, required=True, help="filtered rows (parquet)")
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--seqlen-limit", type=int, required=True)
    parser.add_argument("--bos-token", required=True)
    parser.add_argument("--response-init-token", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS)  # an internal tunable: no rule passes it
    return parser.parse_args(argv)


def _body(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    # tokenizers sizes its thread pool when first used: bind it to the rule's threads.
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    stats = filter_parquet(
        args.input, args.tokenizer, args.output, args.stats, seqlen_limit=args.seqlen_limit,
        bos_token=args.bos_token, response_init_token=args.response_init_token, batch_rows=args.batch_rows,
    )
    log.info("done: %s", json.dumps(stats))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
