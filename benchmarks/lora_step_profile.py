"""Where one LoRA optimizer step's time goes on the GPU: the trainer's own Trainer (recipe defaults, random 7B-shaped
base, sequence 8192, GBS 8) under torch.profiler, CUDA kernel time bucketed by kind, and the host gaps (step wall time
minus kernel time: the GPU idle, waiting on the host).

    python3 benchmarks/lora_step_profile.py --precision bf16 fp8 --out $OUT
Prints a table last; the profiler's top kernels go to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUCKETS = [  # (bucket, kernel-name pattern), first match wins
    ("attention", r"flash|fmha|fused_attn|cudnn|sdpa|attention"),
    ("communication", r"nccl"),
    ("optimizer", r"adam|multi_tensor|l2norm"),
    ("GEMM", r"gemm|cutlass|sm90_xmma|nvjet|matmul|cublas|wgrad|dgrad"),
    ("norms", r"norm"),
    ("cast/transpose (fp8)", r"cast|transpose|amax|quantize|fp8|scale"),
    ("copies", r"copy|memcpy|memset|cat|fill"),
    ("elementwise/other", r"."),
]


def profile(precision: str, steps: int, out: Path) -> dict:
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from benchmarks.lora_throughput_7b import synthetic_rows
    from workflow_scripts.train import trainer as trainer_module
    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
    from workflow_scripts.train.train_config import build_config

    data = synthetic_rows(Path("/tmp/lora7b_rows.npy"), 16)
    cfg = build_config("llama2_7b_lora_1xh100_bf16", {"precision": precision, "random_base": True,
                                                      "train_data": [str(data)], "validation_data": str(data),
                                                      "max_steps": 100})
    init_parallel(1, 1, seed=cfg.seed)
    trainer = trainer_module.Trainer(cfg, out / f"run_{precision}", out / f"ckpt_{precision}")
    for step in range(2):  # warm-up: allocator, fp8 scales, cuDNN plans
        trainer.train_step(step)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for step in range(2, 2 + steps):
            trainer.train_step(step)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    totals: dict[str, float] = {name: 0.0 for name, _ in BUCKETS}
    kernels = []
    for event in prof.key_averages():
        if event.device_type.name != "CUDA":  # kernels only: CPU ops also carry their kernels' time
            continue
        self_us = getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0)
        if not self_us:
            continue
        bucket = next(name for name, pattern in BUCKETS if re.search(pattern, event.key, flags=re.I))
        totals[bucket] += self_us / 1e6
        kernels.append((self_us / 1e6, event.key[:120], bucket))
    kernels.sort(reverse=True)
    (out / f"kernels_{precision}.json").write_text(json.dumps(kernels[:60], indent=1))
    shutdown_parallel()
    busy = sum(totals.values())
    return {"precision": precision, "step_s": wall / steps, "tokens_per_s": steps * 8 * 8192 / wall,
            "buckets_s": {k: v / steps for k, v in totals.items()}, "host_gap_s": max(wall - busy, 0.0) / steps,
            "recompute": trainer.recompute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp8"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/profile")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if len(args.precision) > 1:  # one process per precision (parallel state, fp8 globals)
        import subprocess

        results = []
        for precision in args.precision:
            proc = subprocess.run([sys.executable, __file__, "--precision", precision, "--steps", str(args.steps),
                                   "--out", str(args.out)], capture_output=True, text=True)
            (args.out / f"profile_{precision}.log").write_text(proc.stdout + proc.stderr)
            found = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            results.append(json.loads(found[-1][7:]) if found else {"precision": precision, "error": proc.stderr[-800:]})
    else:
        results = [profile(args.precision[0], args.steps, args.out)]
        print("RESULT " + json.dumps(results[0]))
        return
    (args.out / "lora_step_profile.json").write_text(json.dumps(results, indent=2))
    print(f"\ncommand: python3 benchmarks/lora_step_profile.py --precision {' '.join(args.precision)} "
          f"--steps {args.steps}\n")
    names = [name for name, _ in BUCKETS] + ["host gaps"]
    print("| seconds per step | " + " | ".join(r["precision"] for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in names:
        cells = []
        for r in results:
            if "error" in r:
                cells.append("error")
                continue
            value = r["host_gap_s"] if name == "host gaps" else r["buckets_s"][name]
            cells.append(f"{value:.3f} ({100 * value / r['step_s']:.0f}%)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| step (wall) | " + " | ".join(f"{r.get('step_s', 0):.3f}" for r in results) + " |")
    print("| tokens/s | " + " | ".join(f"{r.get('tokens_per_s', 0):,.0f}" for r in results) + " |")


if __name__ == "__main__":
    main()
