"""Tokenize one consolidated C4 file (`.json.gz`, one JSON document per line) into Megatron `.bin/.idx`.

Reference settings (MLPerf Llama 3.1, NeMo's preprocess_data_for_megatron.py): the `text` field only, one item per
document, no BOS and no EOD unless asked for, documents whose token list is empty are skipped, uint16 ids when the
vocabulary is under 65,500 tokens. Streams in batches: memory is bounded by the batch size, not the file.

CLI: python -m workflow_scripts.data.c4_tokenize --input F.json.gz --output-prefix P --tokenizer T --threads N
                                           --bos-token '<s>' --eod-token '</s>' [--append-eod] [--add-bos]
                                           [--sources F.sources.json]
Writes P.bin, P.idx and, last, P.stats.json with the sizes and hashes of the two (P is e.g.
results/c4/tokenized/c4-train.en_6_text_document); readers check them (workflow_scripts/data/tokenized_set.py).
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import queue
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from workflow_scripts.core.atomic import temp_sibling, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.indexed_dataset import IndexedDatasetWriter, optimal_dtype, read_back
from workflow_scripts.core.json_input import lone_surrogate
from workflow_scripts.core.progress import Progress
from workflow_scripts.data.tokenized_set import FILES_KEY, identities
from workflow_scripts.data.tokenizer_files import load_tokenizer, special_token_id, tokenizer_sha256

log = logging.getLogger("c4_tokenize")
BATCH_DOCS = 2048


@dataclass
class Batch:
    texts: list[str]
    compressed_pos: int  # bytes of the .gz consumed so far, for the ETA


def _source_of(sources: list[dict] | None, offset: int) -> str:
    """Which raw shard a compressed byte offset of a consolidated file came from (from the consolidation manifest)."""
    for entry in sources or []:
        if entry.get("start", 0) <= offset < entry.get("end", -1):
            return f" (raw shard {entry['path']})"
    return ""


def _line_of(path: Path, line_no: int, sources: list[dict] | None) -> str:
    """`<file> line N`, with the raw shard and its own line where the consolidation manifest has line ranges."""
    for entry in sources or []:
        first = entry.get("first_line")
        if first is not None and first <= line_no < first + entry["lines"]:
            return f"{path} line {line_no} (raw shard {entry['path']} line {line_no - first + 1})"
    return f"{path} line {line_no}"


def read_documents(path: Path, batch_docs: int = BATCH_DOCS, sources: list[dict] | None = None) -> Iterator[Batch]:
    """Yield batches of `text` fields; any bad line fails naming the file and 1-based line number (and the raw shard
    and its line, given the consolidation manifest's `sources`)."""
    texts: list[str] = []
    line_no = 0
    try:
        raw = open(path, "rb")
    except OSError as err:
        raise PipelineInputError(f"{path}: cannot open ({err.strerror})") from err
    with raw, gzip.GzipFile(fileobj=raw, mode="rb") as handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                try:
                    doc = json.loads(line)
                except UnicodeDecodeError as err:
                    raise PipelineInputError(f"{_line_of(path, line_no, sources)}: invalid UTF-8 ({err.reason} at "
                                             f"byte {err.start})") from err
                except json.JSONDecodeError as err:
                    raise PipelineInputError(f"{_line_of(path, line_no, sources)}: malformed JSON ({err.msg} at "
                                             f"column {err.colno})") from err
                if not isinstance(doc, dict) or "text" not in doc:
                    raise PipelineInputError(f"{_line_of(path, line_no, sources)}: no 'text' field")
                text = doc["text"]
                if not isinstance(text, str):
                    raise PipelineInputError(f"{_line_of(path, line_no, sources)}: 'text' is {type(text).__name__}, "
                                             "not a string")
                if problem := lone_surrogate(line, text):
                    raise PipelineInputError(f"{_line_of(path, line_no, sources)}: 'text' {problem}")
                texts.append(text)
                if len(texts) == batch_docs:
                    yield Batch(texts, raw.tell())
                    texts = []
        except (OSError, EOFError, zlib.error) as err:
            where = _source_of(sources, raw.tell())
            raise PipelineInputError(f"{path}{where}: unreadable gzip after line {line_no} ({err})") from err
        if texts:
            yield Batch(texts, raw.tell())


def _prefetch(batches: Iterator[Batch], depth: int = 4) -> Iterator[Batch]:
    """Run the reader in a thread so JSON parsing overlaps with tokenization (which releases the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # handed to the consumer, which re-raises it
            q.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@dataclass
class TokenizeStats:
    documents: int = 0
    skipped_empty: int = 0
    tokens: int = 0


def tokenize_file(
    input_path: Path,
    output_prefix: Path,
    tokenizer_path: Path,
    *,
    append_eod: bool = False,
    add_bos: bool = False,
    bos_token: str = "<s>",
    eod_token: str = "</s>",
    sources: list[dict] | None = None,
    batch_docs: int = BATCH_DOCS,
) -> dict:
    """Tokenize `input_path` into `<output_prefix>.bin/.idx` (+ `.stats.json`), atomically. Returns the stats."""
    tokenizer = load_tokenizer(tokenizer_path)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = optimal_dtype(vocab_size)
    prefix_ids = [special_token_id(tokenizer, bos_token, "c4.add_bos")] if add_bos else []
    suffix_ids = [special_token_id(tokenizer, eod_token, "c4.append_eod")] if append_eod else []
    # encode_batch_fast skips offset tracking; ids are the same as encode_batch.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp_prefix = temp_sibling(output_prefix)
    stats = _write_documents(input_path, tmp_prefix, dtype, encode, (prefix_ids, suffix_ids), sources, batch_docs)
    verified, files = _install(tmp_prefix, output_prefix, stats)
    result = {
        "input": str(input_path),
        "documents": stats.documents,
        "skipped_empty": stats.skipped_empty,
        "tokens": stats.tokens,
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab_size,
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": tokenizer_sha256(tokenizer_path),
        "append_eod": append_eod,
        "add_bos": add_bos,
        "verified_by": verified,
        FILES_KEY: files,
    }
    write_json(f"{output_prefix}.stats.json", result)
    return result


def _write_documents(input_path: Path, tmp_prefix: Path, dtype: type, encode: Callable[..., list],
                     affixes: tuple[list[int], list[int]], sources: list[dict] | None, batch_docs: int) -> TokenizeStats:
    """Each non-empty document's ids, between the BOS and EOD ids of `affixes`, into `<tmp_prefix>.bin/.idx`
    (finalized; removed on any error)."""
    prefix_ids, suffix_ids = affixes
    writer = IndexedDatasetWriter(tmp_prefix, dtype)
    stats = TokenizeStats()
    total = os.path.getsize(input_path)
    progress = Progress(log, f"tokenize {input_path.name}", total)
    try:
        for batch in _prefetch(read_documents(input_path, batch_docs, sources)):
            encodings = encode(batch.texts, add_special_tokens=False)
            ids = [prefix_ids + enc.ids + suffix_ids for enc in encodings if enc.ids]
            stats.skipped_empty += len(encodings) - len(ids)
            if ids:
                lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
                flat = np.fromiter((t for x in ids for t in x), dtype=dtype, count=int(lengths.sum()))
                writer.add_documents(flat, lengths)
            progress.update(batch.compressed_pos, docs=writer.sequences, tokens=writer.tokens)
        if writer.sequences == 0:
            raise PipelineInputError(f"{input_path}: no document with any tokens ({stats.skipped_empty} empty documents)")
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    stats.documents, stats.tokens = writer.sequences, writer.tokens
    progress.update(total, force=True, docs=stats.documents, tokens=stats.tokens)
    return stats


def _install(tmp_prefix: Path, output_prefix: Path, stats: TokenizeStats) -> tuple[str, dict]:
    """Read the written files back, then rename them into place: (how they were verified, their identities)."""
    try:
        verified = verify_written(tmp_prefix, stats.documents, stats.tokens)
        files = identities(tmp_prefix)
        # The old stats.json goes first and the new one comes last: a job killed in between leaves a set that every
        # reader refuses (tokenized_set.read_stats), never old stats describing new files.
        Path(f"{output_prefix}.stats.json").unlink(missing_ok=True)
        for ext in (".bin", ".idx"):
            os.replace(f"{tmp_prefix}{ext}", f"{output_prefix}{ext}")
    finally:
        for ext in (".bin", ".idx"):
            Path(f"{tmp_prefix}{ext}").unlink(missing_ok=True)
    return verified, files


def verify_written(prefix: Path, documents: int, tokens: int) -> str:
    """Read the index back (indexed_dataset.read_back) and check its counts against the writer's; returns how."""
    read_docs, read_tokens = read_back(prefix)
    if (read_docs, read_tokens) != (documents, tokens):
        raise RuntimeError(f"{prefix}: the index holds {read_docs} documents / {read_tokens} tokens, "
                           f"the writer wrote {documents} / {tokens}")
    return "workflow_scripts.data.indexed_dataset.read_back"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output-prefix", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--append-eod", action="store_true")
    parser.add_argument("--add-bos", action="store_true")
    parser.add_argument("--bos-token", required=True)
    parser.add_argument("--eod-token", required=True)
    parser.add_argument("--sources", type=Path, help="consolidation manifest: errors name the raw shard and its line")
    parser.add_argument("--batch-docs", type=int, default=BATCH_DOCS)  # an internal tunable: no rule passes it
    return parser.parse_args(argv)


def _body(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    # tokenizers sizes its thread pool when first used: bind it to the rule's threads.
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    sources = json.loads(args.sources.read_text())["sources"] if args.sources and args.sources.exists() else None
    stats = tokenize_file(
        args.input, args.output_prefix, args.tokenizer,
        append_eod=args.append_eod, add_bos=args.add_bos, bos_token=args.bos_token, eod_token=args.eod_token,
        sources=sources, batch_docs=args.batch_docs,
    )
    log.info("done: %s", json.dumps(stats))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
