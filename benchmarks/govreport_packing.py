"""Benchmark of GovReport packing (path a) against its peers, side by side in one run, on the same cores.

  pipeline:   workflow_scripts.data.govreport_pack.pack_file (parquet rows -> template -> tokenize -> filter -> batch-wise
              packing -> packed parquet), train split semantics (num_proc 8, batch_size 1000), seq_length 8192
  tokenizer:  tokenizers' encode_batch_fast over the same templated texts already in memory (no reading, no packing)
  reference:  the MLPerf reference's own pipeline (scripts/utils.py): transformers fast tokenizer in datasets.map,
              datasets.filter, group_texts in datasets.map, num_proc = --threads (optional, --reference-docs rows)
Throughput = tokens of all templated examples (before the length filter) per second, the same count for every row.

Corpus: --docs reports of 1,000-10,000 words (uniform) with 100-1,000-word summaries, English-like Zipf text from the
demo C4 generator's vocabulary; a 32,000-token byte-level BPE (the Llama 2 vocabulary size) trained on 300 of them.
Both are cached in benchmarks/out/govreport/ (git-ignored).

Run:  .venv/bin/python benchmarks/govreport_packing.py [--docs 20000] [--threads 2] [--reference-docs 2000]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "govreport"
SEQ = 8192


def _text(rng, words: np.ndarray, cdf: np.ndarray, n_words: int) -> str:
    idx = np.minimum(np.searchsorted(cdf, rng.random(n_words)), len(words) - 1)
    tokens = words[idx].astype(object)
    ends = np.cumsum(rng.integers(6, 28, size=n_words // 6 + 1))
    ends = ends[ends < n_words]
    tokens[ends] = tokens[ends] + "."
    paragraphs = ends[rng.random(len(ends)) < 0.12]
    tokens[paragraphs] = tokens[paragraphs] + "\n"
    return " ".join(tokens).replace("\n ", "\n") + "."


def corpus(docs: int, seed: int = 2024) -> Path:
    """Raw GovReport-like rows (input, output) in one parquet (cached)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workflow_scripts.demo.demo_c4_corpus import Language

    path = OUT / f"govreport_{docs}docs_seed{seed}.parquet"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    vocab = Language(seed)
    words, cdf = vocab.words, vocab.cdf
    rng = np.random.default_rng(seed)
    writer = pq.ParquetWriter(f"{path}.tmp", pa.schema([("input", pa.string()), ("output", pa.string())]))
    for start in range(0, docs, 500):
        n = min(500, docs - start)
        reports = [_text(rng, words, cdf, int(rng.integers(1000, 10001))) for _ in range(n)]
        summaries = [_text(rng, words, cdf, int(rng.integers(100, 1001))) for _ in range(n)]
        writer.write_table(pa.table({"input": reports, "output": summaries}))
        print(f"  generated {start + n}/{docs} reports", flush=True)
    writer.close()
    os.replace(f"{path}.tmp", path)
    return path


def tokenizer_for(data: Path, vocab: int) -> Path:
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = OUT / f"tokenizer_{vocab}.json"
    if path.exists():
        return path
    texts = pq.read_table(data, columns=["input"]).slice(0, 300).column("input").to_pylist()
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    path.write_text(tokenizer.to_str())
    return path


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def reference_pipeline(data: Path, tok_path: Path, threads: int) -> tuple[int, int]:
    """scripts/utils.py's create_datasets (train split) on the rows of `data`: (rows, templated tokens)."""
    import datasets
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from workflow_scripts.data.tokenizer_files import load_tokenizer

    base = load_tokenizer(tok_path)
    base.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", base.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=base, bos_token="<s>", eos_token="</s>")
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(dir=OUT) as cache:
        raw = datasets.Dataset.from_parquet(str(data), cache_dir=cache, keep_in_memory=True)
        return _reference_maps(raw, tokenizer, threads, cache)


def _reference_maps(raw, tokenizer, threads: int, cache: str) -> tuple[int, int]:
    from itertools import chain

    import pyarrow.compute as pc

    def tokenize(example):
        texts = [f"### Summarize the following text:\n {i}\n ### Summary:\n {o}{tokenizer.eos_token}"
                 for i, o in zip(example["input"], example["output"])]
        return {"input_ids": tokenizer(texts).input_ids}

    def group(examples):
        joined = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = len(joined["input_ids"]) // SEQ * SEQ
        result = {k: [t[i : i + SEQ] for i in range(0, total, SEQ)] for k, t in joined.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    tokenized = raw.map(tokenize, batched=True, num_proc=threads, remove_columns=raw.column_names,
                        cache_file_name=f"{cache}/tok.arrow")
    tokens = pc.sum(pc.list_value_length(tokenized.data.column("input_ids"))).as_py()
    kept = tokenized.filter(lambda ex: [len(x) <= SEQ for x in ex["input_ids"]], batched=True, num_proc=threads,
                            cache_file_name=f"{cache}/filter.arrow")
    packed = kept.map(group, batched=True, num_proc=threads, cache_file_name=f"{cache}/pack.arrow")
    return len(packed), tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--reference-docs", type=int, default=2000, help="rows for the reference peer; 0 = skip")
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    import pyarrow.parquet as pq

    from workflow_scripts.data import govreport_pack
    from workflow_scripts.core.progress import setup_logging
    from workflow_scripts.data.tokenizer_files import load_tokenizer

    setup_logging()  # the pipeline's progress lines go to stderr
    data = corpus(args.docs)
    tok_path = tokenizer_for(data, args.vocab)
    work = OUT / "work"
    work.mkdir(exist_ok=True)
    results = []

    pipe_t, stats = timed(lambda: govreport_pack.pack_file(
        data, work / "train.parquet", work / "train.stats.json", tok_path,
        seq_length=SEQ, validation=False, num_proc=8, batch_size=1000))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # The bare tokenizer over the same templated texts, read into memory beforehand (not timed).
    table = pq.read_table(data)
    texts = [govreport_pack.full_text(r, s, "</s>")
             for r, s in zip(table.column("input").to_pylist(), table.column("output").to_pylist())]
    del table
    tokenizer = load_tokenizer(tok_path)
    batches = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    bare_t, tokens = timed(lambda: sum(len(e.ids) + 1 for b in batches
                                       for e in tokenizer.encode_batch_fast(b, add_special_tokens=False)))
    del texts, batches
    assert stats["rows"] > 0
    results.append(("pipeline: govreport_pack.pack_file (parquet -> packed parquet)", tokens / pipe_t, pipe_t,
                    f"{stats['rows']:,} rows of {SEQ}; {stats['dropped_examples']:,} examples > {SEQ} dropped"))
    results.append(("tokenizer alone: encode_batch_fast, texts in memory", tokens / bare_t, bare_t, ""))
    ratio = [("  ratio pipeline/tokenizer", f"{bare_t / pipe_t:.2f}x")]

    if args.reference_docs:
        n = min(args.reference_docs, args.docs)
        sub = _first_rows(data, n, work)
        ref_t, (ref_rows, ref_tokens) = timed(lambda: reference_pipeline(sub, tok_path, args.threads))
        sub_t, sub_stats = timed(lambda: govreport_pack.pack_file(
            sub, work / "sub.parquet", work / "sub.stats.json", tok_path, seq_length=SEQ, validation=False,
            num_proc=args.threads, batch_size=1000))
        results.append((f"reference utils.py (datasets.map, num_proc={args.threads}), first {n:,} docs",
                        ref_tokens / ref_t, ref_t, f"{ref_rows:,} rows"))
        results.append((f"pipeline on the same {n:,} docs (num_proc={args.threads} semantics)", ref_tokens / sub_t,
                        sub_t, f"{sub_stats['rows']:,} rows"))
        assert ref_rows == sub_stats["rows"], (ref_rows, sub_stats["rows"])
        ratio.append(("  ratio pipeline/reference", f"{ref_t / sub_t:.2f}x"))

    print(f"\ncorpus: {args.docs:,} reports of 1k-10k words + 100-1k-word summaries, "
          f"{data.stat().st_size / 1e6:,.0f} MB parquet, {tokens:,} templated tokens; BPE vocab {args.vocab}; "
          f"seq_length {SEQ}; threads {args.threads}; cpus {os.cpu_count()}; pipeline peak RSS {peak_mib:,.0f} MiB")
    print(f"command: .venv/bin/python benchmarks/govreport_packing.py --docs {args.docs} --threads {args.threads} "
          f"--reference-docs {args.reference_docs}\n")
    width = max(len(r[0]) for r in results)
    print(f"{'measure'.ljust(width)} | {'tokens/s':>12} | {'time':>8} | note")
    print(f"{'-' * width}-|-{'-' * 12}-|-{'-' * 8}-|-----")
    for name, rate, secs, note in results:
        print(f"{name.ljust(width)} | {rate:>12,.0f} | {secs:>7.1f}s | {note}")
    for name, value in ratio:
        print(f"{name.ljust(width)} | {value:>12} | {'':>8} |")


def _first_rows(data: Path, n: int, work: Path) -> Path:
    """The first n rows as their own parquet, so both sides of the reference comparison read the same input."""
    import pyarrow.parquet as pq

    path = work / f"first_{n}.parquet"
    if not path.exists():
        pq.write_table(pq.read_table(data).slice(0, n), path)
    return path


if __name__ == "__main__":
    main()
