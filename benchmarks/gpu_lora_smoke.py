"""GPU run of the trainer entry point: a Llama-2-7B-shaped LoRA run at sequence 8192 (TE spec), bf16 and fp8.

Synthetic packed rows (MLPerf .npy format, 8192 tokens, answer-only masks) and a random base (`random_base`): this
measures throughput and checks that the same entry point runs on an H100; it is not a convergence run.
Run on the GPU machine (see shared/gpu/README.md for the kit):
    PYTHONPATH=/root/site:. python3 benchmarks/gpu_lora_smoke.py --steps 6 --out $OUT
Prints a table last; per-run logs and metrics go to --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def synthetic_rows(path: Path, rows: int, seq: int, vocab: int) -> Path:
    rng = np.random.default_rng(0)
    out = np.empty(rows, dtype=object)
    for i in range(rows):
        mask = np.zeros(seq, dtype=np.int64)
        mask[seq // 2:] = 1
        out[i] = {"input_ids": rng.integers(0, vocab, seq).astype(np.int32), "loss_mask": mask.tolist(),
                  "seq_start_id": [0]}
    np.save(path, out, allow_pickle=True)
    return path


def run(precision: str, optimizer: str, steps: int, data: Path, out: Path) -> dict:
    name = f"lora7b_{precision}_{optimizer}"
    run_dir = out / name
    sets = [f"precision={precision}", f"optimizer_impl={optimizer}", "random_base=true", f"train_data=[{data}]",
            f"validation_data={data}",
            f"max_steps={steps}", "eval_every_samples=100000", "eval_samples=8"]
    cmd = [sys.executable, "-m", "workflow_scripts.train", "--recipe", "llama2_7b_lora_1xh100_bf16",
           "--out", str(run_dir), "--ckpt-dir", str(out / f"ckpt_{name}"), "--set", *sets]
    env = dict(os.environ, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}")
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        return {"precision": precision, "optimizer": optimizer, "error": (out / f"{name}.log").read_text()[-1500:]}
    rows = list(csv.DictReader(open(run_dir / "steps.csv")))
    steady = [r for r in rows[1:]] or rows  # the first step includes warm-up
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tps = statistics.median(float(r["tokens_per_s"]) for r in steady)
    return {"precision": precision, "optimizer": optimizer, "steps": len(rows), "tokens_per_s": tps,
            "step_time_s": statistics.median(float(r["step_time_s"]) for r in steady),
            "loss_first": float(rows[0]["loss"]), "loss_last": float(rows[-1]["loss"]),
            "mfu": 6 * 6.74e9 * tps / 989.4e12, "trainer_mfu": metrics.get("mfu")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/gpu")))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp8"])
    # megatron: DDP + megatron optimizer with fp32 master weights (the GPU default); torch: AdamW on the bf16 params
    parser.add_argument("--optimizers", nargs="+", default=["megatron", "torch"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = synthetic_rows(Path("/tmp/lora7b_rows.npy"), 16, 8192, 32000)
    results = [run(p, o, args.steps, data, args.out) for p in args.precisions for o in args.optimizers]
    (args.out / "gpu_lora_smoke.json").write_text(json.dumps(results, indent=2))
    import torch

    print(f"\ndevice: {torch.cuda.get_device_name()}; Llama-2-7B shape, LoRA r16 on qkv+o, seq 8192, GBS 8 (mbs 1), "
          "TE spec, full activation recompute")
    print(f"command: PYTHONPATH=/root/site:. python3 benchmarks/gpu_lora_smoke.py --steps {args.steps} "
          f"--precisions {' '.join(args.precisions)} --optimizers {' '.join(args.optimizers)}\n")
    print("| precision | optimizer | steps | tokens/s | step time (s) | loss first -> last | MFU (6N, dense bf16 peak) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['precision']} | {r['optimizer']} | failed: {r['error'][-300:]!r} |")
        else:
            print(f"| {r['precision']} | {r['optimizer']} | {r['steps']} | {r['tokens_per_s']:,.0f} | {r['step_time_s']:.2f} | "
                  f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} | {100 * r['mfu']:.1f}% |")


if __name__ == "__main__":
    main()
