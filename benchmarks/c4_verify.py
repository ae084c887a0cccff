"""Cost of the reliability checks of the C4 path, measured in one run on the same cores.

  consolidation before/after: `concatenate` / `validation_subset` of a baseline commit (header check only) vs the
      working tree (every raw shard decompressed, CRC-32 and length checked, on a thread pool), on demo-sized inputs:
      the default demo config (16 train shards x 120 docs in 8 groups; 8 validation shards x 100 docs, 500 kept) and
      the test fixture (4 shards x 40 docs into 1 file). Interleaved, median of --repeats.
  verification throughput: one generated shard, and --mb MB of shards consolidated on 1 and 2 threads, beside
      `cat` and `gzip -t` of the same shards.
  tokenized set check: tokenized_set.read_stats on a demo-sized set; size+edge hash vs full sha256 of a 1 GiB file.

Run:  .venv/bin/python benchmarks/c4_verify.py [--baseline 1761f34] [--mb 64] [--repeats 21]
Generated inputs go to benchmarks/out/c4_verify/ (git-ignored).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "c4_verify"


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_module(commit: str):
    """c4_consolidate.py as of `commit`, importable beside the working tree's (its relative imports still resolve)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:workflow_scripts/data/c4_consolidate.py"],
                            check=True, capture_output=True, text=True).stdout
    path = OUT / "c4_consolidate_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("workflow_scripts.c4_consolidate_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_sized(old, new, repeats: int) -> list[str]:
    from workflow_scripts.demo.demo_c4_corpus import generate_corpus

    demo, fixture, work = OUT / "demo", OUT / "fixture", OUT / "work"
    for folder, args in ((demo, (16, 8, 120, 100, 1234)), (fixture, (4, 2, 40, 30, 7))):
        if not folder.is_dir():
            folder.mkdir(parents=True)
            generate_corpus(folder, *args)
    work.mkdir(exist_ok=True)
    train, val = sorted(demo.glob("c4-train.*")), sorted(demo.glob("c4-validation.*"))
    small = sorted(fixture.glob("c4-train.*"))

    def groups(m):
        for k in range(8):
            m.concatenate(train[2 * k:2 * k + 2], work / f"g{k}.json.gz", work / f"g{k}.sources.json")

    def validation(m):
        extra = [work / "v.sources.json"] if m is new else []
        m.validation_subset(val, 500, work / "v.json.gz", *extra)

    packed = sum(p.stat().st_size for p in train) / 1e6
    cases = {f"demo: 8 train groups (16 shards, {packed:.1f} MB)": groups,
             "demo: validation, 500 of 800 docs (8 shards)": validation,
             "test fixture: 4 shards into 1 file": lambda m: m.concatenate(small, work / "f.json.gz", work / "f.s")}
    rows = []
    for name, fn in cases.items():
        times = {"before": [], "after": []}
        for _ in range(repeats):
            for label, module in (("before", old), ("after", new)):
                times[label].append(median_s(lambda: fn(module), 1))
        before, after = statistics.median(times["before"]), statistics.median(times["after"])
        rows.append(f"{name}: before {before * 1e3:.1f} ms, after {after * 1e3:.1f} ms")
    return rows


def throughput(new, mb: int) -> list[str]:
    from workflow_scripts.demo.demo_c4_corpus import DocumentGenerator

    raw = OUT / f"raw_{mb}mb"
    shards = [raw / f"c4-train.{i:05d}-of-00008.json.gz" for i in range(8)]
    if not (raw / "done").exists():
        raw.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(shards):
            gen, size, n = DocumentGenerator(1000 + i), 0, 0
            with gzip.open(path, "wb", compresslevel=6) as out:
                while size < mb * 1_000_000 // 8:
                    line = (json.dumps(gen.document(n), ensure_ascii=False) + "\n").encode()
                    out.write(line)
                    size, n = size + len(line), n + 1
        (raw / "done").touch()
    packed = sum(p.stat().st_size for p in shards) / 1e6
    one = median_s(lambda: new.verify_gzip(shards[0]), 3)
    inflated = new.verify_gzip(shards[0]).decompressed / 1e6
    rows = [f"verify_gzip, one shard ({shards[0].stat().st_size / 1e6:.1f} MB gzip, {inflated:.1f} MB JSON): "
            f"{one * 1e3:.0f} ms = {inflated / one:.0f} MB/s of JSON"]
    for threads in (1, 2):
        secs = median_s(lambda: new.concatenate(shards, OUT / "work" / "big.json.gz", threads=threads), 3)
        rows.append(f"concatenate {len(shards)} shards ({packed:.1f} MB gzip), {threads} thread(s): {secs:.2f} s")
    for name, cmd in (("cat", f"cat {' '.join(map(str, shards))} > {OUT}/work/cat.json.gz"),
                      ("gzip -t", f"gzip -t {' '.join(map(str, shards))}")):
        rows.append(f"{name}: {median_s(lambda: subprocess.run(cmd, shell=True, check=True), 3):.2f} s")
    return rows


def set_check(repeats: int) -> list[str]:
    from workflow_scripts.data.c4_consolidate import concatenate
    from workflow_scripts.data.c4_tokenize import tokenize_file
    from workflow_scripts.demo.demo_tokenizer import train_tokenizer
    from workflow_scripts.core.file_identity import file_identity
    from workflow_scripts.data.tokenized_set import read_stats

    raw, work = sorted((OUT / "demo").glob("c4-train.*")), OUT / "work"
    tokenizer = work / "tokenizer.json"
    tokenizer.write_text(train_tokenizer(raw, vocab_size=2048).to_str())
    concatenate(raw[12:14], work / "c4-train.en_6.json.gz")
    prefix = work / "c4-train.en_6_text_document"
    stats = tokenize_file(work / "c4-train.en_6.json.gz", prefix, tokenizer)
    rows = [f"read_stats, demo-sized set ({stats['documents']} docs, {stats['tokens']:,} tokens; "
            f".bin {stats['files']['bin']['size']:,} B, .idx {stats['files']['idx']['size']:,} B, hashed whole): "
            f"{median_s(lambda: read_stats(prefix), repeats) * 1e3:.2f} ms"]
    big = work / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(1024):
            handle.write(os.urandom(1 << 20))

    def full() -> None:
        digest = hashlib.sha256()
        with open(big, "rb") as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)

    full()  # page cache: both read from memory
    edges = median_s(lambda: file_identity(big), repeats)
    rows.append(f"1 GiB file: size + sha256 of first/last MiB {edges * 1e3:.1f} ms, full sha256 {median_s(full, 3):.2f} s")
    big.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="1761f34", help="commit whose consolidation checked headers only")
    parser.add_argument("--mb", type=int, default=64, help="uncompressed JSON for the throughput part")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / "work", ignore_errors=True)
    (OUT / "work").mkdir()
    from workflow_scripts.data import c4_consolidate

    rows = demo_sized(baseline_module(args.baseline), c4_consolidate, args.repeats)
    rows += throughput(c4_consolidate, args.mb) + set_check(args.repeats)
    print(f"command: .venv/bin/python benchmarks/c4_verify.py --baseline {args.baseline} --mb {args.mb} "
          f"--repeats {args.repeats}; cpus {os.cpu_count()}, available {c4_consolidate.available_cores()}")
    print("\n".join(f"- {row}" for row in rows))


if __name__ == "__main__":
    main()
