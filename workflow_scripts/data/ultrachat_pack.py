"""Pack one UltraChat split as TRL 0.8.2's ConstantLengthDataset does for SFTTrainer(packing=True) (spec §5.2).

- each conversation (`messages`: list of {role, content}) is rendered with the recipe's ChatML template:
  "<|im_start|>{role}\\n{content}<|im_end|>\\n" per message, no generation prompt;
- texts are buffered until their characters reach seq_length * chars_per_token * num_of_sequences (the text that
  crosses the limit is included); each buffer is tokenized without special tokens, concatenated with no separator
  (append_concat_token=False), cut into seq_length chunks, its last partial chunk dropped, and (shuffle=True) its
  chunks shuffled with one seeded `random.Random` (TRL uses the global `random` state);
- every chunk is one row, labels = input_ids.
Files are read in the given order, streamed in batches: memory is bounded by one buffer.

CLI: python -m workflow_scripts.data.ultrachat_pack --tokenizer T --output S.parquet --stats S.stats.json
        --seq-length 2048 --chars-per-token 3.6 --num-of-sequences 1024 --seed 100 [--no-shuffle] --threads N
        FILE.parquet...
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.parquet_input import column_values, open_parquet
from workflow_scripts.data.packed_parquet import PackedParquetWriter
from workflow_scripts.core.progress import Progress
from workflow_scripts.data.tokenizer_files import load_tokenizer, tokenizer_sha256
from workflow_scripts.data.ultrachat_tokenizer import IM_END, IM_START, missing_tokens

log = logging.getLogger("ultrachat_pack")


def chatml(messages: list[dict]) -> str:
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def _check_conversation(path: Path, row: int, conversation) -> list[dict]:
    if not isinstance(conversation, list):
        kind = "null" if conversation is None else type(conversation).__name__
        raise PipelineInputError(f"{path}: row {row}: column 'messages' is {kind}, not a list of messages")
    for index, message in enumerate(conversation):
        if not isinstance(message, dict):
            raise PipelineInputError(f"{path}: row {row}: column 'messages'[{index}] is not a {{role, content}} record")
        for field in ("role", "content"):
            value = message.get(field)
            if not isinstance(value, str):
                kind = "missing" if field not in message else ("null" if value is None else type(value).__name__)
                raise PipelineInputError(f"{path}: row {row}: column 'messages'[{index}].{field} is {kind}, not a string")
    return conversation


def iter_texts(paths: Sequence[Path], batch_rows: int = 512) -> Iterator[str]:
    """ChatML texts of every conversation of every file, in order; bad rows fail naming file, row and field."""
    import pyarrow as pa

    for path in paths:
        path = Path(path)
        handle = open_parquet(path)
        names = handle.schema_arrow.names
        if "messages" not in names:
            raise PipelineInputError(f"{path}: missing column 'messages' (columns: {', '.join(names)})")
        if handle.metadata.num_rows == 0:
            raise PipelineInputError(f"{path}: empty file (no rows)")
        row = 1
        try:
            for batch in handle.iter_batches(batch_size=batch_rows, columns=["messages"]):
                for conversation in column_values(path, batch.column("messages"), "messages", row):
                    yield chatml(_check_conversation(path, row, conversation))
                    row += 1
        except (pa.ArrowException, OSError) as err:  # a corrupt page: truncated or damaged file
            raise PipelineInputError(f"{path}: unreadable from row {row} ({err})") from err


def iter_buffers(texts: Iterator[str], max_chars: float) -> Iterator[list[str]]:
    """TRL's buffer: append texts until the character count reaches max_chars; the last buffer may be short."""
    buffer: list[str] = []
    length = 0
    for text in texts:
        buffer.append(text)
        length += len(text)
        if length >= max_chars:
            yield buffer
            buffer, length = [], 0
    if buffer:
        yield buffer


@dataclass
class PackStats:
    conversations: int = 0
    buffers: int = 0
    rows: int = 0
    tokens_in: int = 0
    tokens_packed: int = 0
    dropped_tokens: int = 0


def pack_split(
    paths: Sequence[Path], tokenizer_path: Path, output: Path, stats_path: Path, *, seq_length: int,
    chars_per_token: float = 3.6, num_of_sequences: int = 1024, shuffle: bool = True, seed: int = 100,
) -> dict:
    tokenizer = load_tokenizer(tokenizer_path)
    missing = missing_tokens(tokenizer)
    if missing:
        raise PipelineInputError(
            f"tokenizer {tokenizer_path} lacks the ChatML special tokens {', '.join(missing)} "
            "(use the tokenizer written by workflow_scripts.data.ultrachat_tokenizer)"
        )
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    rng = random.Random(seed)
    stats = PackStats()
    max_chars = seq_length * chars_per_token * num_of_sequences
    progress = Progress(log, f"pack {output.name}")
    with PackedParquetWriter(output) as writer:
        for buffer in iter_buffers(iter_texts(paths), max_chars):
            encodings = encode(buffer, add_special_tokens=False)
            parts = [np.asarray(enc.ids, dtype=np.int64) for enc in encodings]
            flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            n_rows = len(flat) // seq_length
            chunks = flat[: n_rows * seq_length].reshape(n_rows, seq_length)
            order = list(range(n_rows))
            if shuffle:
                rng.shuffle(order)  # the same permutation random.shuffle(examples) makes from the same state
            chunks = chunks[order]
            if n_rows:
                writer.write(chunks, chunks)
            stats.conversations += len(buffer)
            stats.buffers += 1
            stats.rows += n_rows
            stats.tokens_in += len(flat)
            stats.tokens_packed += n_rows * seq_length
            stats.dropped_tokens += len(flat) - n_rows * seq_length
            progress.update(stats.conversations, conversations=stats.conversations, rows=stats.rows)
        if stats.conversations == 0:
            raise PipelineInputError("ultrachat: no input files")
        if stats.rows == 0:
            raise PipelineInputError(f"ultrachat: {stats.tokens_in} tokens in all, too few for one {seq_length}-token row")
    result = {
        **asdict(stats),
        "files": [str(p) for p in paths],
        "seq_length": seq_length,
        "chars_per_token": chars_per_token,
        "num_of_sequences": num_of_sequences,
        "buffer_chars": max_chars,
        "shuffle": shuffle,
        "seed": seed,
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": tokenizer_sha256(tokenizer_path),
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
    }
    write_json(stats_path, result)
    return result


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="the ChatML tokenizer (ultrachat_tokenizer)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--chars-per-token", type=float, required=True)
    parser.add_argument("--num-of-sequences", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--no-shuffle", action="store_true")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    # tokenizers sizes its thread pool when first used: bind it to the rule's threads.
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    stats = pack_split(
        args.files, args.tokenizer, args.output, args.stats, seq_length=args.seq_length,
        chars_per_token=args.chars_per_token, num_of_sequences=args.num_of_sequences,
        shuffle=not args.no_shuffle, seed=args.seed,
    )
    log.info("done: %s", json.dumps(stats))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
