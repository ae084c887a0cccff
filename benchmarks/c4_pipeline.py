"""Benchmark of the C4 data path against its peers, side by side in one run, on the same cores.

  tokenization: workflow_scripts.data.c4_tokenize.tokenize_file (gzip + JSON + tokenize + .bin/.idx + megatron read-back)
                vs  tokenizers' Tokenizer.encode_batch over the same texts already in memory (target >= 0.8x)
  consolidation: workflow_scripts.data.c4_consolidate.concatenate  vs  `cat` of the same shards (target >= 0.9x)
  memory: peak RSS of the tokenization entry point run as the rule runs it (target < 2 GiB)

Run:  .venv/bin/python benchmarks/c4_pipeline.py [--mb 200] [--threads 2]
The generated corpus and tokenizer are cached in benchmarks/out/ (git-ignored).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "c4"


def generate(mb: int, shards: int) -> list[Path]:
    """Shards of the demo generator until `mb` MB of uncompressed JSON lines exist (cached)."""
    from workflow_scripts.demo.demo_c4_corpus import DocumentGenerator

    raw = OUT / f"raw_{mb}mb"
    marker = raw / "done"
    paths = [raw / f"c4-train.{i:05d}-of-{shards:05d}.json.gz" for i in range(shards)]
    if marker.exists():
        return paths
    raw.mkdir(parents=True, exist_ok=True)
    per_shard = mb * 1_000_000 // shards
    for i, path in enumerate(paths):
        gen, size, n = DocumentGenerator(1000 + i), 0, 0
        with gzip.open(path, "wb", compresslevel=6) as out:
            while size < per_shard:
                line = (json.dumps(gen.document(n), ensure_ascii=False) + "\n").encode()
                out.write(line)
                size, n = size + len(line), n + 1
        print(f"  generated {path.name}: {n} docs, {size / 1e6:.0f} MB", flush=True)
    marker.touch()
    return paths


def tokenizer_for(shards: list[Path], vocab: int) -> Path:
    """A byte-level BPE of Mixtral's vocabulary size trained on the first shard (cached)."""
    from workflow_scripts.demo.demo_tokenizer import train_tokenizer

    path = OUT / f"tokenizer_{vocab}.json"
    if not path.exists():
        path.write_text(train_tokenizer(shards[:1], vocab).to_str())
    return path


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200, help="uncompressed corpus size")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3, help="consolidation repeats (median)")
    parser.add_argument("--parts", default="consolidate,tokenize", help="which measurements to run")
    parser.add_argument("--copies", type=int, default=10,
                        help="consolidate the shard list this many times over (both peers), so a run measures copy "
                             "throughput rather than the ~20 ms fixed cost of a call")
    parser.add_argument("--quick", action="store_true",
                        help="skip the encode_batch_fast peer and the separate peak-RSS run (two fewer passes)")
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    from tokenizers import Tokenizer

    from workflow_scripts.data.c4_consolidate import concatenate
    from workflow_scripts.data.c4_tokenize import BATCH_DOCS, tokenize_file

    shards = generate(args.mb, args.shards)
    tok_path = tokenizer_for(shards, args.vocab)
    work = OUT / "work"
    work.mkdir(exist_ok=True)
    compressed = sum(p.stat().st_size for p in shards)
    rows = []

    # Consolidation vs cat, alternating so the page cache treats both alike.
    merged, cat_out = work / "c4-train.en_0.json.gz", work / "cat.json.gz"
    ours_t, cat_t = [], []
    listed = shards * args.copies
    for _ in range(args.repeats if "consolidate" in args.parts else 0):
        ours_t.append(timed(lambda: concatenate(listed, merged)))
        cat_t.append(timed(lambda: subprocess.run(f"cat {' '.join(map(str, listed))} > {cat_out}", shell=True, check=True)))
    if ours_t:
        assert merged.read_bytes() == cat_out.read_bytes()
        ours, cat = statistics.median(ours_t), statistics.median(cat_t)
        size = compressed * args.copies / 1e6
        rows.append((f"consolidate {size:,.0f} MB (pipeline)", f"{size / ours:,.0f} MB/s", f"{ours:.3f}s", f"median of {args.repeats}"))
        rows.append((f"consolidate {size:,.0f} MB (cat)", f"{size / cat:,.0f} MB/s", f"{cat:.3f}s", f"median of {args.repeats}"))
        rows.append(("  ratio pipeline/cat", f"{cat / ours:.2f}x", "", "target >= 0.9x"))
        cat_out.unlink()
        if args.copies > 1:  # tokenization below reads one copy of the corpus
            concatenate(shards, merged)
    if "tokenize" not in args.parts:
        _print(args, compressed, None, None, rows)
        return

    # Tokenization: the pipeline in-process, then the bare tokenizer over the same texts held in memory.
    prefix = work / "c4-train.en_0_text_document"
    pipe_t = timed(lambda: tokenize_file(merged, prefix, tok_path))
    stats = json.loads(Path(f"{prefix}.stats.json").read_text())
    texts = []
    with gzip.open(merged, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    tokenizer = Tokenizer.from_file(str(tok_path))
    batches = [texts[i : i + BATCH_DOCS] for i in range(0, len(texts), BATCH_DOCS)]
    bare_tokens = 0

    def bare():
        nonlocal bare_tokens
        bare_tokens = sum(len(e.ids) for b in batches for e in tokenizer.encode_batch(b, add_special_tokens=False))

    bare_t = timed(bare)
    fast_t = None if args.quick else timed(lambda: [tokenizer.encode_batch_fast(b, add_special_tokens=False) for b in batches])
    assert bare_tokens == stats["tokens"], (bare_tokens, stats["tokens"])
    tokens, docs = stats["tokens"], len(texts)
    rows.append(("tokenize (pipeline, from .json.gz to .bin/.idx)", f"{tokens / pipe_t:,.0f} tok/s", f"{pipe_t:.1f}s",
                 f"{docs / pipe_t:,.0f} docs/s"))
    rows.append(("tokenize (bare encode_batch, texts in memory)", f"{tokens / bare_t:,.0f} tok/s", f"{bare_t:.1f}s", ""))
    if fast_t:
        rows.append(("tokenize (bare encode_batch_fast, in memory)", f"{tokens / fast_t:,.0f} tok/s", f"{fast_t:.1f}s", ""))
    rows.append(("  ratio pipeline/encode_batch", f"{bare_t / pipe_t:.2f}x", "", "target >= 0.8x"))
    del texts, batches

    # Peak RSS of the entry point exactly as the rule runs it (a fresh process).
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = None if args.quick else [sys.executable, "-m", "workflow_scripts.data.c4_tokenize", "--input", str(merged), "--output-prefix",
           str(work / "rss_text_document"), "--tokenizer", str(tok_path), "--threads", str(args.threads),
           "--bos-token", "<s>", "--eod-token", "</s>"]
    if cmd:
        subprocess.run(cmd, check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rows.append(("tokenize peak RSS (rule entry point)", f"{max(peak, before) / 1024:,.0f} MiB", "", "target < 2048 MiB"))

    _print(args, compressed, docs, tokens, rows)


def _print(args, compressed, docs, tokens, rows) -> None:
    counts = f", {docs:,} docs, {tokens:,} tokens" if docs else ""
    print(f"\ncorpus: {args.shards} shards, {args.mb} MB uncompressed JSON, {compressed / 1e6:.0f} MB gzip{counts}; "
          f"BPE vocab {args.vocab}; threads {args.threads}; cpus {os.cpu_count()}")
    print(f"command: .venv/bin/python benchmarks/c4_pipeline.py --mb {args.mb} --threads {args.threads}"
          f" --parts {args.parts}{' --quick' if args.quick else ''} --repeats {args.repeats} --copies {args.copies}\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | {'rate':>16} | {'time':>8} | note")
    print(f"{'-' * width}-|-{'-' * 16}-|-{'-' * 8}-|-----")
    for name, rate, secs, note in rows:
        print(f"{name.ljust(width)} | {rate:>16} | {secs:>8} | {note}")


if __name__ == "__main__":
    main()
