"""LoRA training throughput on one GPU, side by side in one call: HF transformers + PEFT (the peer) and the trainer's
real entry point with its recipe defaults. Llama-2-7B shape, random bf16 base, sequence 8192, LoRA r 16 / alpha 32 /
dropout 0.1 on the attention projections (MLPerf llama2_70b_lora), GBS 8 as 8 micro-batches of 1, AdamW on the
adapters.

Run on the GPU machine (shared/gpu/README.md brings TE, megatron-core and mlperf-logging to /root/site):
    python3 benchmarks/lora_throughput_7b.py --out $OUT
The peer runs in a process without /root/site on PYTHONPATH (TE's cuDNN clashes with peft's import of it).
Model FLOPs per token (frozen base, LoRA adapters negligible): 4 N + 6 L S H (forward 2N, input gradients 2N, causal
attention 6 L S H over forward and backward) = 33.4 GFLOP for this shape.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(vocab=32000, hidden=4096, ffn=11008, layers=32, heads=32, seq=8192)
N_PARAMS = 6_738_415_616
FLOPS_PER_TOKEN = 4 * N_PARAMS + 6 * SHAPE["layers"] * SHAPE["seq"] * SHAPE["hidden"]
GBS = 8


def peer(steps: int, checkpointing: bool) -> dict:
    """HF LlamaForCausalLM (SDPA) + PEFT LoRA, bf16, one optimizer step = 8 micro-batches of one 8192-token row."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["ffn"],
                         num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
                         max_position_embeddings=SHAPE["seq"], attn_implementation="sdpa", torch_dtype=torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4, weight_decay=1e-4)
    ids = torch.randint(0, SHAPE["vocab"], (1, SHAPE["seq"]), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(GBS):
            (model(input_ids=ids, labels=ids).loss / GBS).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 0.3)
        optim.step()
        optim.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[1:])
    return {"tokens_per_s": GBS * SHAPE["seq"] / step, "step_s": step,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def synthetic_rows(path: Path, rows: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    out = np.empty(rows, dtype=object)
    for i in range(rows):
        mask = np.ones(SHAPE["seq"], dtype=np.int64)
        out[i] = {"input_ids": rng.integers(0, SHAPE["vocab"], SHAPE["seq"]).astype(np.int32),
                  "loss_mask": mask.tolist(), "seq_start_id": [0]}
    np.save(path, out, allow_pickle=True)
    return path


def trainer(name: str, sets: list[str], steps: int, data: Path, out: Path) -> dict:
    """python -m workflow_scripts.train with the recipe's defaults plus `sets` (a random base of the recipe's shape)."""
    cmd = [sys.executable, "-m", "workflow_scripts.train", "--recipe", "llama2_7b_lora_1xh100_bf16",
           "--out", str(out / name), "--ckpt-dir", str(out / f"ckpt_{name}"), "--set", "random_base=true",
           f"train_data=[{data}]", f"validation_data={data}", f"max_steps={steps}", "eval_every_samples=1000000",
           "eval_samples=8", *sets]
    env = dict(os.environ, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}")
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        return {"error": (out / f"{name}.log").read_text()[-1200:]}
    rows = list(csv.DictReader(open(out / name / "steps.csv")))
    metrics = json.loads((out / name / "metrics.json").read_text())
    step = statistics.median(float(r["step_time_s"]) for r in rows[1:])
    memory = metrics["memory"]
    return {"tokens_per_s": GBS * SHAPE["seq"] / step, "step_s": step, "peak_gib": memory["peak_allocated_gib"],
            "recompute": memory["recompute"], "estimate_gib": memory[f"estimate_{memory['recompute']}_gib"],
            "loss_first": float(rows[0]["loss"]), "loss_last": float(rows[-1]["loss"])}


RUNS = {  # name: (label, --set overrides); the first two are the recipe's own defaults
    "bf16": ("trainer, recipe defaults, bf16", []),
    "fp8": ("trainer, recipe defaults, fp8", ["precision=fp8"]),
    "bf16_full": ("lever: bf16, full recompute", ["recompute_activations=full"]),
    "fp8_full": ("lever: fp8, full recompute", ["precision=fp8", "recompute_activations=full"]),
    "fp8_attn": ("lever: fp8 + FP8 attention", ["precision=fp8", "fp8_attention=true"]),
    "fp8_amax16": ("lever: fp8, amax history 16", ["precision=fp8", "fp8_amax_history_len=16"]),
    "fp8_current": ("lever: fp8, current scaling (tensorwise)", ["precision=fp8", "fp8_recipe=tensorwise"]),
    "bf16_graphs": ("lever: bf16 + CUDA graphs", ["cuda_graphs=true"]),
    "fp8_graphs": ("lever: fp8 + CUDA graphs", ["precision=fp8", "cuda_graphs=true"]),
    "bf16_op_fuser": ("lever: bf16 + TE op fuser (MLP)", ["te_op_fuser=true"]),
    "fp8_op_fuser": ("lever: fp8 + TE op fuser (MLP)", ["precision=fp8", "te_op_fuser=true"]),
    "bf16_unfused_rope": ("lever off: bf16, RoPE unfused", ["rope_fusion=false"]),
    "fp8_unfused_rope": ("lever off: fp8, RoPE unfused", ["precision=fp8", "rope_fusion=false"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/lora7b")))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help=f"trainer runs among {list(RUNS)}")
    parser.add_argument("--peer", nargs="*", default=["plain", "checkpointing"], help="peer runs: plain, checkpointing")
    parser.add_argument("--peer-only", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_only:  # the peer's own process
        print(json.dumps(peer(args.steps, args.peer_only == "checkpointing")))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for kind in args.peer:
        proc = subprocess.run([sys.executable, __file__, "--peer-only", kind, "--steps", str(args.steps)], env=clean,
                              capture_output=True, text=True)
        (args.out / f"peer_{kind}.log").write_text(proc.stdout + proc.stderr)
        last = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
        results[f"peer_{kind}"] = json.loads(last[0]) if last else {"error": proc.stderr[-1200:]}
    data = synthetic_rows(Path("/tmp/lora7b_rows.npy"), 16)
    for name in args.runs:
        results[name] = trainer(name, RUNS[name][1], args.steps, data, args.out)
        (args.out / "lora_throughput_7b.json").write_text(json.dumps(results, indent=2))  # kept if the call times out
    import torch

    best_peer = max((r.get("tokens_per_s", 0) for k, r in results.items() if k.startswith("peer")), default=0)
    labels = {"peer_plain": "peer: HF + PEFT, SDPA, no gradient checkpointing",
              "peer_checkpointing": "peer: HF + PEFT, SDPA, gradient checkpointing",
              **{k: v[0] for k, v in RUNS.items()}}
    print(f"\ndevice: {torch.cuda.get_device_name()}; Llama-2-7B shape, seq 8192, LoRA r16 on q/k/v/o, GBS 8 (mbs 1); "
          f"model FLOPs/token = 4N + 6LSH = {FLOPS_PER_TOKEN / 1e9:.1f} G")
    print(f"command: python3 benchmarks/lora_throughput_7b.py --steps {args.steps} --runs {' '.join(args.runs)}\n")
    print("| run | recompute | tokens/s | model TFLOP/s | peak GiB | estimate GiB | vs peer's best | first loss |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {labels[name]} | error: {r['error'][-200:]!r} | | | | | | |")
            continue
        ratio = r["tokens_per_s"] / best_peer if best_peer else float("nan")
        print(f"| {labels[name]} | {r.get('recompute', '-')} | {r['tokens_per_s']:,.0f} | "
              f"{r['tokens_per_s'] * FLOPS_PER_TOKEN / 1e12:.0f} | {r['peak_gib']:.1f} | "
              f"{r.get('estimate_gib', '-')} | {ratio:.2f}x | {r.get('loss_first', float('nan')):.4f} |")


if __name__ == "__main__":
    main()
