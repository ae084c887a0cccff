"""An earlier generation engine against the current one, in one process on one batch (no entry point, no LoadGen):
whether a change to the engine itself made it slower, apart from the call-to-call spread of the entry point's rate.

    git show 363f2d6:workflow_scripts/inference/decode_engine.py > old_decode_engine.py   # the engine to compare
    python3 benchmarks/generate_engine_ab.py --old old_decode_engine.py --work /tmp/generate7b

`--work` is generate_throughput_7b.py's (its converted checkpoint and prompts). Runs the `--rows` longest prompts as
one batch with each engine twice (the first run of a process warms up), then 2 x rows prompts: the old engine as two
batches, the current one as one stream of `--rows` slots. `--new-tokens` new tokens each (min = max). Prints a table.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_old(path: Path):
    spec = importlib.util.spec_from_file_location("old_decode_engine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, required=True, help="an earlier decode_engine.py (with generate_batch_fast)")
    p.add_argument("--work", type=Path, default=Path("/tmp/generate7b"))
    p.add_argument("--rows", type=int, default=180, help="the entry point's batch auto on the H200")
    p.add_argument("--new-tokens", type=int, default=256)
    a = p.parse_args()

    import pandas as pd
    import torch

    from workflow_scripts.inference import generate as G
    from workflow_scripts.inference.continuous_batching import generate_batch_fast, generate_stream

    old = load_old(a.old)
    model, cfg = G.load_model(a.work / "mcore", 1)
    prompts = sorted(pd.read_pickle(a.work / "samples.pkl")["tok_input"].tolist(), key=len, reverse=True)
    batch, two = prompts[:a.rows], prompts[:2 * a.rows]
    n, eos, rows = a.new_tokens, 2, []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def timed(name, fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        seconds = time.perf_counter() - start
        rows.append((name, seconds, sum(map(len, out)) / seconds))
        return out

    for rep in (1, 2):
        before = timed(f"old, one batch of {len(batch)} (#{rep})",
                       lambda: old.generate_batch_fast(model, cfg.vocab_size, batch, n, eos, n))
        now = timed(f"current, one batch of {len(batch)} (#{rep})",
                    lambda: generate_batch_fast(model, cfg.vocab_size, batch, n, eos, n))
    timed(f"old, {len(two)} prompts as two batches",
          lambda: [ids for part in (two[:a.rows], two[a.rows:])
                   for ids in old.generate_batch_fast(model, cfg.vocab_size, part, n, eos, n)])
    timed(f"current, {len(two)} prompts streamed through {a.rows} slots",
          lambda: [ids for _, ids in generate_stream(model, cfg.vocab_size, two, a.rows, n, eos, n)])
    print(f"command: python3 benchmarks/generate_engine_ab.py --old {a.old} --work {a.work}")
    print(f"identical rows, old and current: {sum(x == y for x, y in zip(before, now))} of {len(batch)}")
    print("| run | seconds | new tokens/s |\n|---|---:|---:|")
    for name, seconds, rate in rows:
        print(f"| {name} | {seconds:.2f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
