"""Benchmark of generation sharded over torchrun processes: `python -m workflow_scripts.inference.generate` in one process (the
peer: the single-process run the rule did before) vs torchrun with 2 processes as data parallel 2 and as tensor
parallel 2, same model, prompts and one thread per process, run one after the other here.

The DP 2 accuracy log must equal the one-process log byte for byte (checked); the samples whose TP 2 tokens equal
the one-process ones are counted (all in fp32 on CPU; bf16 on a GPU may flip near-ties).
Model: the demo Llama shape with random weights (benchmarks/generate_kv_cache.py, cached in benchmarks/out/generate/).
Seconds are the generation time rank 0 reports in generate.json (loading excluded); wall is the whole command.

Run:  .venv/bin/python benchmarks/generate_sharded.py [--samples 64] [--max-new-tokens 32] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out" / "generate_sharded"


def inputs(samples: int) -> tuple[Path, Path]:
    """The prompts (50-399 tokens, as generate_kv_cache.py) and a one-token tokenizer whose '</s>' is id 0, an id
    the random model does not emit, so every sample runs to max_new_tokens."""
    import pandas as pd
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 4096, (int(n),), generator=gen).tolist()
               for n in torch.randint(50, 400, (samples,), generator=gen)]
    sample_file, tokenizer = OUT / f"samples_{samples}.pkl", OUT / "tokenizer.json"
    pd.DataFrame({"tok_input": prompts}).to_pickle(sample_file)
    tokenizer.write_text(Tokenizer(WordLevel({"</s>": 0}, unk_token="</s>")).to_str())
    return sample_file, tokenizer


def run(nproc: int, tp: int, args: list[str], out: Path) -> tuple[dict, float]:
    out.mkdir(parents=True, exist_ok=True)
    launcher = ([sys.executable, "-m", "workflow_scripts.inference.generate"] if nproc == 0 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                 "-m", "workflow_scripts.inference.generate"])
    cmd = [*launcher, *args, "--tp", str(tp), "--out", str(out / "acc.json"), "--summary", str(out / "summary.txt"),
           "--detail", str(out / "detail.txt"), "--stats", str(out / "stats.json")]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"), check=True,
                   capture_output=True)
    return json.loads((out / "stats.json").read_text()), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    import torch
    from generate_kv_cache import model_dir

    from workflow_scripts.inference.accuracy_log import read_accuracy_log

    samples, tokenizer = inputs(a.samples)
    common = ["--mcore", str(model_dir()), "--samples", str(samples), "--tokenizer", str(tokenizer),
              "--eos-token", "</s>", "--max-new-tokens", str(a.max_new_tokens), "--min-new-tokens", "1",
              "--batch-size", str(a.batch_size), "--limit", "0", "--threads", "1"]
    layouts = {"1 process, python -m (peer)": (0, 1), "torchrun 2, DP 2 x TP 1": (2, 1),
               "torchrun 2, DP 1 x TP 2": (2, 2)}
    results = {name: run(nproc, tp, common, OUT / f"run_{nproc}_{tp}") for name, (nproc, tp) in layouts.items()}
    single = OUT / "run_0_1" / "acc.json"
    assert (OUT / "run_2_1" / "acc.json").read_bytes() == single.read_bytes(), "DP 2 log differs from 1 process"
    reference, tp2 = read_accuracy_log(single), read_accuracy_log(OUT / "run_2_2" / "acc.json")
    same = sum(tp2[i] == ids for i, ids in reference.items())
    base = results["1 process, python -m (peer)"][0]["seconds"]
    print(f"command: .venv/bin/python benchmarks/generate_sharded.py --samples {a.samples} "
          f"--max-new-tokens {a.max_new_tokens} --batch-size {a.batch_size}")
    tokens = results["1 process, python -m (peer)"][0]["generated_tokens"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{device}: prompts {a.samples} (50-399 tokens), {tokens} generated tokens; DP 2 log identical to 1 process; "
          f"TP 2 tokens identical for {same}/{len(reference)} samples")
    print("| layout | generation s | tokens/s | speed-up | wall s (incl. start, load) |")
    print("|---|---:|---:|---:|---:|")
    for name, (stats, wall) in results.items():
        print(f"| {name} | {stats['seconds']:.2f} | {stats['tokens_per_second']:.1f} | "
              f"{base / stats['seconds']:.2f}x | {wall:.1f} |")


if __name__ == "__main__":
    main()
