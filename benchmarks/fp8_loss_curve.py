"""Nothing traded for speed: the demo LoRA run's loss curve in fp8 (TE, recipe fp8 settings incl. FP8 attention) beside
bf16, on one GPU, through the trainer's entry point, from the demo's converted checkpoint and GovReport rows.

    python3 benchmarks/fp8_loss_curve.py --demo DEMO_RESULTS_DIR --steps 96 --out $OUT
DEMO_RESULTS_DIR is a demo run's `results/` (convert/llama_mcore, govreport/). Prints the per-step agreement last.
The demo shape (hidden 64, FFN 160, vocab 2048) meets TE's fp8 divisibility rules (multiples of 16).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, precision: str, demo: Path, steps: int, out: Path, extra: tuple[str, ...] = ()) -> list[float]:
    sets = [f"checkpoint={demo / 'convert' / 'llama_mcore'}", f"train_data=[{demo / 'govreport' / 'train.npy'}]",
            f"validation_data={demo / 'govreport' / 'validation.npy'}", "spec=te", f"precision={precision}",
            f"max_steps={steps}", "target=0.0", *extra]
    cmd = [sys.executable, "-m", "workflow_scripts.train", "--recipe", "demo_lora_cpu", "--out", str(out / name),
           "--ckpt-dir", str(out / f"ckpt_{name}"), "--set", *sets]
    env = dict(os.environ, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}")
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        lines = (out / f"{name}.log").read_text().splitlines()
        raise SystemExit(f"{name} failed ({code}):\n" + "\n".join(l for l in lines if "Error" in l or "error" in l)[-2000:])
    return [float(r["loss"]) for r in csv.DictReader(open(out / name / "steps.csv"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/fp8_curve")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bf16 = run("bf16", "bf16", args.demo, args.steps, args.out)
    # the demo's head_dim 16 has no FP8 attention kernel (the trainer falls back to bf16 attention by itself)
    fp8 = run("fp8", "fp8", args.demo, args.steps, args.out, ("fp8_attention=false",))
    diffs = [abs(a - b) for a, b in zip(bf16, fp8)]
    window = max(len(bf16) // 8, 1)
    tail_bf16, tail_fp8 = sum(bf16[-window:]) / window, sum(fp8[-window:]) / window
    print(f"\ncommand: python3 benchmarks/fp8_loss_curve.py --demo {args.demo} --steps {args.steps}\n")
    print("| steps | loss first (bf16 / fp8) | mean of last "
          f"{window} (bf16 / fp8) | relative gap, last {window} | max per-step abs diff |")
    print("|---:|---|---|---:|---:|")
    print(f"| {len(bf16)} | {bf16[0]:.4f} / {fp8[0]:.4f} | {tail_bf16:.4f} / {tail_fp8:.4f} | "
          f"{abs(tail_fp8 - tail_bf16) / tail_bf16:.2%} | {max(diffs):.4f} |")


if __name__ == "__main__":
    main()
