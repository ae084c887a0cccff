"""Benchmark of the OpenOrca filter stage against the reference's way of doing it, side by side on the same cores.

  ours:      workflow_scripts.data.openorca_filter.filter_parquet (record batches, tokenizers' encode_batch, streamed parquet)
  reference: processorca.py's approach: whole parquet in pandas, one `tokenizer(text)["input_ids"]` call per row
             through transformers (PreTrainedTokenizerFast, BOS post-processor as Llama's), whole-frame filters
Both read the same generated parquet (demo_openorca, realistic row mix) with the same demo tokenizer; each runs in its
own process so that its peak RSS is its own. Both must keep the same rows (checked).

Run:  .venv/bin/python benchmarks/openorca_filter.py [--rows-per-origin 5000] [--threads 2]
The generated parquet and tokenizer are cached in benchmarks/out/openorca/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "openorca"
ALLOWED = "’–“”—"


def tokenizer_path() -> Path:
    """The workflow's demo tokenizer if built, else one trained here on a small generated corpus (cached)."""
    demo = ROOT / "results/demo/tokenizer/tokenizer.json"
    if demo.exists():
        return demo
    cached = OUT / "tokenizer.json"
    if not cached.exists():
        from workflow_scripts.demo.demo_c4_corpus import generate_corpus
        from workflow_scripts.demo.demo_tokenizer import train_tokenizer

        shards = generate_corpus(OUT / "c4", 4, 1, 120, 10, seed=1234)[:4]
        cached.write_text(train_tokenizer(shards, 4096).to_str())
    return cached


def run_ours(parquet: Path, tokenizer: Path) -> int:
    from workflow_scripts.data.openorca_filter import filter_parquet

    stats = filter_parquet(parquet, tokenizer, OUT / "ours.parquet", OUT / "ours.json", response_init_token="Ġ")
    return stats["kept"]


def run_reference(parquet: Path, tokenizer: Path) -> int:
    import pandas as pd
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from workflow_scripts.data.openorca_rules import BAD_SYSTEM_PROMPTS

    raw = Tokenizer.from_file(str(tokenizer))
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    init_id = raw.token_to_id("Ġ")
    df = pd.read_parquet(parquet).rename(columns={"response": "output"})
    df["input"] = df.apply(
        lambda r: f"<s>[INST] <<SYS>>\n{r['system_prompt']}\n<</SYS>>\n\n{r['question']} [/INST]"
        if r["system_prompt"] else f"<s>[INST] {r['question']} [/INST]", axis=1)
    df["tok_input"] = df["input"].apply(lambda x: hf(x)["input_ids"] + [init_id])
    df["tok_output"] = df["output"].apply(lambda x: hf(x)["input_ids"])
    df["origin"] = df["id"].apply(lambda x: x.split(".")[0])
    english = df["input"].apply(lambda s: all(c.isascii() or c in ALLOWED for c in s))
    english &= df["output"].apply(lambda s: all(c.isascii() or c in ALLOWED for c in s))
    df = df[english].reset_index(drop=True)
    df["tok_input_length"] = df["tok_input"].apply(len)
    df["tok_output_length"] = df["tok_output"].apply(len)
    df = df[(df["tok_input_length"] < 1024) & (df["tok_output_length"] < 1024) & (df["tok_output_length"] >= 3)]
    bad = df["system_prompt"].isin(BAD_SYSTEM_PROMPTS) & df["origin"].isin(["niv", "t0"])
    df = df[~bad].reset_index(drop=True)
    df.to_pickle(OUT / "reference.pkl")
    return len(df)


def child(impl: str, parquet: Path, tokenizer: Path) -> None:
    start = time.perf_counter()
    kept = (run_ours if impl == "ours" else run_reference)(parquet, tokenizer)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": impl, "seconds": seconds, "kept": kept, "peak_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-origin", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; the median is reported")
    parser.add_argument("--child", choices=["ours", "reference"])
    parser.add_argument("--parquet", type=Path)
    parser.add_argument("--tokenizer", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.parquet, args.tokenizer)
        return
    from workflow_scripts.demo.demo_openorca import write_demo_parquet

    OUT.mkdir(parents=True, exist_ok=True)
    parquet = OUT / f"orca_{args.rows_per_origin}.parquet"
    if not parquet.exists():
        write_demo_parquet(parquet, args.rows_per_origin, seed=1234)
    rows = json.loads(Path(f"{parquet}.plan.json").read_text())["rows"]
    tokenizer = tokenizer_path()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="true",
               PYTHONPATH=str(ROOT))
    runs: dict[str, list[dict]] = {"ours": [], "reference": []}
    for _ in range(args.repeats):
        for impl in runs:  # interleaved, so that load from other processes hits both alike
            cmd = [sys.executable, __file__, "--child", impl, "--parquet", str(parquet), "--tokenizer", str(tokenizer)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            runs[impl].append(json.loads(out.strip().splitlines()[-1]))
    results = [sorted(r, key=lambda x: x["seconds"])[len(r) // 2] for r in runs.values()]
    assert results[0]["kept"] == results[1]["kept"], results
    print(f"OpenOrca filter, {rows:,} rows ({args.rows_per_origin:,} ordinary per origin), "
          f"{args.threads} tokenizer threads, median of {args.repeats} runs, tokenizer {tokenizer.relative_to(ROOT)}")
    print("| implementation | seconds | rows/s | peak RSS MiB | kept rows |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['impl']} | {r['seconds']:.1f} | {rows / r['seconds']:,.0f} | {r['peak_mib']:.0f} | {r['kept']:,} |")
    ratio = results[1]["seconds"] / results[0]["seconds"]
    print(f"ours is {ratio:.2f}x the reference approach's throughput")
    print(f"command: .venv/bin/python benchmarks/openorca_filter.py --rows-per-origin {args.rows_per_origin} "
          f"--threads {args.threads} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
