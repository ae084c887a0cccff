"""CUDA graphs keep the numbers: the trainer's entry point with `cuda_graphs` on and off, per step losses side by side.

A 4-layer model of Llama-2-7B's width (head dim 128, so FP8 attention runs), sequence 4096, GBS 8 as 8 micro-batches,
LoRA r 16 on the attention projections with dropout 0 (a replayed graph draws other dropout masks than eager code, so
dropout would hide a real difference). The first `cuda_graph_warmup_steps` steps run eagerly in both runs; every later
step of the graphed run replays the captured layers. Prints the largest per-step loss and gradient-norm difference,
beside the same differences between two eager runs (the floor: cuDNN's fused attention backward is not bitwise
deterministic).
Run on the GPU machine (shared/gpu/README.md brings TE, megatron-core and mlperf-logging to /root/site):
    PYTHONPATH=/root/site python3 benchmarks/cuda_graph_parity.py --out $OUT
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQ, VOCAB = 4096, 32000
SHAPE = ("{vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_layers: 4, num_attention_heads: 32, "
         "num_query_groups: 32, head_dim: 128, max_position_embeddings: 4096}")


def rows(path: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    out = np.empty(count, dtype=object)
    for i in range(count):
        out[i] = {"input_ids": rng.integers(0, VOCAB, SEQ).astype(np.int32), "loss_mask": [1] * SEQ,
                  "seq_start_id": [0]}
    np.save(path, out, allow_pickle=True)
    return path


def train(name: str, sets: list[str], steps: int, data: Path, out: Path) -> list[dict] | str:
    cmd = [sys.executable, "-m", "workflow_scripts.train", "--recipe", "llama2_7b_lora_1xh100_bf16",
           "--out", str(out / name), "--ckpt-dir", str(out / f"ckpt_{name}"), "--set", "random_base=true",
           f"model_shape={SHAPE}", f"seq_length={SEQ}", "lora={rank: 16, alpha: 32, dropout: 0.0}",
           f"train_data=[{data}]", f"validation_data={data}", f"max_steps={steps}", "eval_every_samples=1000000",
           "eval_samples=8", *sets]
    env = dict(os.environ, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}")
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        return (out / f"{name}.log").read_text()[-2000:]
    return list(csv.DictReader(open(out / name / "steps.csv")))


def differences(one: list[dict], two: list[dict]) -> tuple[str, str]:
    """The largest per-step |loss difference| and relative gradient-norm difference of two runs."""
    loss = max(abs(float(a["loss"]) - float(b["loss"])) for a, b in zip(one, two))
    norm = max(abs(float(a["grad_norm"]) - float(b["grad_norm"])) / float(a["grad_norm"]) for a, b in zip(one, two))
    return f"{loss:.2e}", f"{norm:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/graphs")))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp8"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = rows(Path("/tmp/graph_parity_rows.npy"), 16)
    table = []
    for precision in args.precisions:
        runs = [train(f"{precision}_{name}", [f"precision={precision}", *sets], args.steps, data, args.out)
                for name, sets in (("eager", []), ("eager_again", []), ("graphs", ["cuda_graphs=true"]))]
        errors = [run for run in runs if isinstance(run, str)]
        if errors:
            table.append((precision, "error", errors[0]))
            continue
        eager, again, graphs = runs
        speed = [np.median([float(r["tokens_per_s"]) for r in run[4:]]) for run in (eager, graphs)]
        table.append((precision, *differences(eager, graphs), *differences(eager, again), f"{speed[0]:,.0f}",
                      f"{speed[1]:,.0f}"))
    print(f"\ncommand: PYTHONPATH=/root/site python3 benchmarks/cuda_graph_parity.py --steps {args.steps} "
          f"--precisions {' '.join(args.precisions)}\n")
    print("| precision | graphs vs eager: max loss diff | grad-norm rel diff | eager vs eager: max loss diff | "
          "grad-norm rel diff | eager tok/s | graphs tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in table:
        if row[1] == "error":
            print(f"| {row[0]} | error | | | | | |\n{row[2]}")
        else:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
