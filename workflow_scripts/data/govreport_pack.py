"""Tokenize and pack raw GovReport rows exactly as the MLPerf Llama 2 70B LoRA reference (scripts/utils.py) does.

Reference semantics (docs: /work/shared/notes/mlperf-spec.md §1.2):
- text  = "### Summarize the following text:\\n {input}\\n ### Summary:\\n {output}</s>" (EOS appended as text),
  tokenized with BOS prepended (Llama 2 `tokenizer(text)`; here: BOS id + encode(text, add_special_tokens=False)).
- validation labels: BOS + prompt ("...### Summary:\\n", tokenized separately) and the final token set to -100;
  train labels = input_ids (loss on every token).
- examples longer than seq_length tokens are dropped (strictly greater).
- packing = `datasets.map(group_texts, batched=True, num_proc=P)`: the filtered rows are split into P contiguous
  shards, each shard into batches of `batch_size` rows; each batch is concatenated and cut into seq_length rows, and
  its remainder dropped. P is 8 for train and 2 for validation in the reference.
Output: a parquet with `input_ids: list<int32>` and `labels: list<int64>` (the MLPerf HF dataset layout) + stats.

CLI: python -m workflow_scripts.data.govreport_pack --input F.{parquet,jsonl} --tokenizer T --seq-length 8192
        [--validation] --num-proc 8 --batch-size 1000 --bos-token '<s>' --eos-token '</s>' --output P.parquet
        --stats P.stats.json --threads N
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.govreport_rows import iter_rows
from workflow_scripts.data.packed_parquet import IGNORE_INDEX, PackedParquetWriter
from workflow_scripts.core.progress import Progress
from workflow_scripts.data.tokenizer_files import load_tokenizer, special_token_id, tokenizer_sha256

log = logging.getLogger("govreport_pack")


def prompt_text(report: str) -> str:
    return f"### Summarize the following text:\n {report}\n ### Summary:\n"


def full_text(report: str, summary: str, eos_token: str) -> str:
    return f"{prompt_text(report)} {summary}{eos_token}"


def map_batches(n_rows: int, num_proc: int, batch_size: int | None) -> list[tuple[int, int]]:
    """[start, end) row ranges that `datasets.Dataset.map(batched=True, num_proc, batch_size)` hands to the function.

    map() lowers num_proc to the row count, shards contiguously (first `n % P` shards one row longer), and batches
    each shard from its own start; batch_size None or <= 0 means one batch per shard.
    """
    if n_rows == 0:
        return []
    shards = max(1, min(num_proc or 1, n_rows))
    div, mod = divmod(n_rows, shards)
    ranges = []
    for rank in range(shards):
        start = div * rank + min(rank, mod)
        end = start + div + (1 if rank < mod else 0)
        step = batch_size if batch_size and batch_size > 0 else max(end - start, 1)
        ranges.extend((b, min(b + step, end)) for b in range(start, end, step))
    return ranges


def validation_labels(ids: np.ndarray, prompt_length: int) -> np.ndarray:
    """The reference's eval labels: BOS + prompt and the final </s> ignored, the summary tokens kept."""
    labels = ids.astype(np.int64)
    labels[:prompt_length] = IGNORE_INDEX
    labels[-1] = IGNORE_INDEX
    return labels


def iter_packed_blocks(
    ids: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None, seq_length: int, num_proc: int,
    batch_size: int | None,
) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
    """group_texts over each map batch: (input_ids int32 [rows, L], labels int64 or None = input_ids, remainder)."""
    for start, end in map_batches(len(ids), num_proc, batch_size):
        flat = np.concatenate(ids[start:end])
        usable = len(flat) // seq_length * seq_length
        block_labels = None
        if labels is not None:
            block_labels = np.concatenate(labels[start:end])[:usable].reshape(-1, seq_length)
        yield flat[:usable].reshape(-1, seq_length), block_labels, len(flat) - usable


def pack_examples(
    ids: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None, seq_length: int, num_proc: int, batch_size: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """All packed rows at once: (input_ids int32 [rows, L], labels int64 [rows, L], dropped remainder tokens)."""
    id_blocks, label_blocks, remainder = [], [], 0
    for block_ids, block_labels, dropped in iter_packed_blocks(ids, labels, seq_length, num_proc, batch_size):
        id_blocks.append(block_ids)
        label_blocks.append(block_ids.astype(np.int64) if block_labels is None else block_labels)
        remainder += dropped
    if not id_blocks:
        return np.zeros((0, seq_length), np.int32), np.zeros((0, seq_length), np.int64), 0
    return np.concatenate(id_blocks), np.concatenate(label_blocks), remainder


@dataclass
class TokenizedSplit:
    ids: list[np.ndarray]
    labels: list[np.ndarray] | None  # None for train (labels = input_ids)
    examples: int = 0
    dropped_too_long: int = 0
    longest: int = 0


def _check_eos(tokenizer, eos_token: str) -> int:
    """The reference appends EOS as *text*: the tokenizer must turn that text into the one EOS id."""
    eos_id = special_token_id(tokenizer, eos_token, "govreport.eos_token (appended to every example)")
    if tokenizer.encode(eos_token, add_special_tokens=False).ids != [eos_id]:
        raise PipelineInputError(f"tokenizer does not encode the text {eos_token!r} as its special token {eos_id}")
    return eos_id


def tokenize_split(
    path: Path, tokenizer, *, seq_length: int, validation: bool, bos_token: str = "<s>", eos_token: str = "</s>"
) -> TokenizedSplit:
    bos_id = special_token_id(tokenizer, bos_token, "govreport.bos_token (prepended like the Llama 2 tokenizer)")
    _check_eos(tokenizer, eos_token)
    # encode_batch_fast skips offset tracking; ids are the same as encode_batch.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    out = TokenizedSplit(ids=[], labels=[] if validation else None)
    progress = Progress(log, f"tokenize {path.name}")
    kept_tokens = 0
    for batch in iter_rows(path):
        texts = [full_text(r, s, eos_token) for r, s in zip(batch.reports, batch.summaries)]
        kept_reports = []
        for enc, report in zip(encode(texts, add_special_tokens=False), batch.reports):
            n = len(enc.ids) + 1
            out.examples += 1
            out.longest = max(out.longest, n)
            if n > seq_length:
                out.dropped_too_long += 1
                continue
            ids = np.empty(n, np.int32)
            ids[0] = bos_id
            ids[1:] = enc.ids
            out.ids.append(ids)
            kept_tokens += n
            kept_reports.append(report)
        if validation and kept_reports:
            prompts = encode([prompt_text(r) for r in kept_reports], add_special_tokens=False)
            first = len(out.ids) - len(kept_reports)
            for ids, enc in zip(out.ids[first:], prompts):
                out.labels.append(validation_labels(ids, len(enc.ids) + 1))
        progress.update(out.examples, examples=out.examples, kept_tokens=kept_tokens)
    progress.update(out.examples, force=True, examples=out.examples, kept_tokens=kept_tokens)
    return out


def pack_file(
    input_path: Path,
    output: Path,
    stats_path: Path,
    tokenizer_path: Path,
    *,
    seq_length: int,
    validation: bool,
    num_proc: int,
    batch_size: int | None,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
) -> dict:
    if seq_length < 2:
        raise PipelineInputError(f"govreport.seq_length: {seq_length} is too short")
    tokenizer = load_tokenizer(tokenizer_path)
    split = tokenize_split(
        Path(input_path), tokenizer, seq_length=seq_length, validation=validation, bos_token=bos_token, eos_token=eos_token
    )
    if not split.ids:
        raise PipelineInputError(f"{input_path}: every one of {split.examples} examples is longer than {seq_length} tokens")
    rows = tokens = loss_tokens = remainder = 0
    # Streamed block by block (one map batch at a time); train labels are the ids, never copied whole.
    with PackedParquetWriter(output) as writer:
        for block_ids, block_labels, dropped in iter_packed_blocks(
            split.ids, split.labels, seq_length, num_proc, batch_size
        ):
            writer.write(block_ids, block_labels)
            rows += len(block_ids)
            tokens += block_ids.size
            loss_tokens += block_ids.size if block_labels is None else int((block_labels != IGNORE_INDEX).sum())
            remainder += dropped
        if rows == 0:
            raise PipelineInputError(f"{input_path}: too few tokens for one {seq_length}-token row")
    stats = {
        "input": str(input_path),
        "split_kind": "validation" if validation else "train",
        "examples": split.examples,
        "dropped_examples": split.dropped_too_long,
        "kept_examples": len(split.ids),
        "longest_example_tokens": split.longest,
        "map_batches": len(map_batches(len(split.ids), num_proc, batch_size)),
        "num_proc": num_proc,
        "batch_size": batch_size,
        "dropped_remainder_tokens": remainder,
        "rows": rows,
        "seq_length": seq_length,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "masked_tokens": tokens - loss_tokens,
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": tokenizer_sha256(tokenizer_path),
    }
    write_json(stats_path, stats)
    return stats


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--validation", action="store_true", help="mask prompt and final EOS (eval split)")
    parser.add_argument("--num-proc", type=int, required=True, help="the reference's map num_proc (8 train, 2 validation)")
    parser.add_argument("--batch-size", type=int, required=True, help="the reference's map batch_size (datasets default)")
    parser.add_argument("--bos-token", required=True)
    parser.add_argument("--eos-token", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    return parser.parse_args(argv)


def _body(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    # tokenizers sizes its thread pool when first used: bind it to the rule's threads.
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    stats = pack_file(
        args.input, args.output, args.stats, args.tokenizer,
        seq_length=args.seq_length, validation=args.validation, num_proc=args.num_proc, batch_size=args.batch_size,
        bos_token=args.bos_token, eos_token=args.eos_token,
    )
    log.info("done: %s", json.dumps(stats))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
