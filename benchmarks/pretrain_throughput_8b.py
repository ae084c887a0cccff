"""Pretraining throughput on one GPU, side by side in one call: a plain PyTorch + HF transformers training step (the
peer) and the trainer's real entry point with the recipe's defaults (llama31_8b_pretrain_8xh100_bf16 / _fp8), on the
Llama 3.1 8B shape cut to as many layers as fit one GPU with the megatron optimizer (--layers, default 16 on an
H200: 18 bytes per parameter for bf16 weights, fp32 gradients, fp32 master weights and Adam), random init, sequence
8192, GBS 32 as 32 micro-batches of 1, synthetic int32 token data in the project's .bin/.idx format.

Run on the GPU machine (shared/gpu/README.md brings TE, megatron-core and mlperf-logging to /root/site):
    python3 benchmarks/pretrain_throughput_8b.py --out $OUT
The peer (HF LlamaForCausalLM, SDPA, fp32 weights with bf16 autocast, torch's fused AdamW on every parameter, the
recipe's clip 1.0) runs in a process without /root/site on PYTHONPATH (TE's cuDNN clashes with it); plain PyTorch
has no fp8 training step, so fp8 is compared with the bf16 peer.
Model FLOPs per token: 6 (N_layers + N_output) + 6 L S H (forward and backward of every matrix except the embedding
lookup, plus causal attention). Anchor: Megatron-Bridge's published Llama 3 8B fp8 pretraining, 744 TFLOP/s per H100
on 8 GPUs. Prints a table last; per-run logs and metrics go to --out.
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
VOCAB, HIDDEN, FFN, HEADS, GROUPS, HEAD_DIM, SEQ = 128256, 4096, 14336, 32, 8, 128, 8192
GBS = 32
ANCHOR_TFLOPS = 744.0


def layer_params() -> int:
    kv = GROUPS * HEAD_DIM
    return 2 * HIDDEN * HIDDEN + 2 * HIDDEN * kv + 3 * HIDDEN * FFN + 2 * HIDDEN


def flops_per_token(layers: int) -> float:
    return 6 * (layers * layer_params() + VOCAB * HIDDEN) + 6 * layers * SEQ * HIDDEN


def peer(layers: int, steps: int, checkpointing: bool) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=layers,
                         num_attention_heads=HEADS, num_key_value_heads=GROUPS, head_dim=HEAD_DIM, rope_theta=500000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         max_position_embeddings=SEQ, attn_implementation="sdpa")
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optim = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1, fused=True)
    ids = torch.randint(0, VOCAB, (1, SEQ), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(GBS):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss / GBS
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[1:])
    return {"tokens_per_s": GBS * SEQ / step, "step_s": step, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def synthetic_data(prefix: Path, documents: int) -> Path:
    """Random int32 ids in the .bin/.idx format the C4 stage writes (a vocabulary above 65,500 needs int32)."""
    import numpy as np

    from workflow_scripts.core.atomic import write_json
    from workflow_scripts.data.indexed_dataset import IndexedDatasetWriter
    from workflow_scripts.data.tokenized_set import FILES_KEY, identities

    rng = np.random.default_rng(0)
    writer = IndexedDatasetWriter(prefix, np.int32)
    lengths = rng.integers(2000, 12000, size=documents)
    writer.add_documents(rng.integers(0, VOCAB, size=int(lengths.sum())).astype(np.int32), lengths)
    writer.finalize()
    # stats.json last, with the files' identities, as the C4 tokenizer publishes a set (the trainer checks them)
    write_json(f"{prefix}.stats.json", {"documents": documents, "tokens": int(lengths.sum()), "dtype": "int32",
                                        "vocab_size": VOCAB, FILES_KEY: identities(prefix)})
    return prefix


def trainer(name: str, recipe: str, layers: int, steps: int, data: Path, out: Path) -> dict:
    """build_index_cache, then python -m workflow_scripts.train with the recipe's defaults; only the layer count (one
    GPU), the step count and the evaluation (none inside the timed steps) are set."""
    shape = (f"model_shape={{vocab_size: {VOCAB}, hidden_size: {HIDDEN}, intermediate_size: {FFN}, "
             f"num_layers: {layers}, num_attention_heads: {HEADS}, num_query_groups: {GROUPS}, head_dim: {HEAD_DIM}, "
             "rope_theta: 500000.0, rope_scaling: {factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, "
             "original_max_position_embeddings: 8192}, max_position_embeddings: 8192}")
    sets = ["--set", shape, f"train_data=[{data}]", f"validation_data={data}", f"index_cache={out / 'index_cache'}",
            f"step_budget={steps}", "eval_every_samples=100000000", "eval_samples=32"]
    env = dict(os.environ, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}")
    with open(out / f"{name}.log", "w") as log:
        for module, args in (("workflow_scripts.train.build_index_cache", ["--done", str(out / f"{name}_cache.json")]),
                             ("workflow_scripts.train", ["--out", str(out / name), "--ckpt-dir", str(out / f"ckpt_{name}")])):
            proc = subprocess.run([sys.executable, "-m", module, "--recipe", recipe, *args, *sets], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                return {"error": (out / f"{name}.log").read_text()[-1500:]}
    rows = list(csv.DictReader(open(out / name / "steps.csv")))
    memory = json.loads((out / name / "metrics.json").read_text())["memory"]
    step = statistics.median(float(r["step_time_s"]) for r in rows[1:])
    return {"tokens_per_s": GBS * SEQ / step, "step_s": step, "peak_gib": memory["peak_allocated_gib"],
            "recompute": memory["recompute"], "loss_first": float(rows[0]["loss"])}


RUNS = {"bf16": ("trainer, llama31_8b_pretrain_8xh100_bf16 defaults", "llama31_8b_pretrain_8xh100_bf16"),
        "fp8": ("trainer, llama31_8b_pretrain_8xh100_fp8 defaults", "llama31_8b_pretrain_8xh100_fp8")}


def _print_table(results: dict, layers: int, steps: int, runs: list[str]) -> None:
    import torch

    fpt = flops_per_token(layers)
    best_peer = max((r.get("tokens_per_s", 0) for k, r in results.items() if k.startswith("peer")), default=0)
    labels = {"peer_plain": "peer: PyTorch + HF, bf16 autocast, no checkpointing",
              "peer_checkpointing": "peer: PyTorch + HF, bf16 autocast, gradient checkpointing",
              **{k: v[0] for k, v in RUNS.items()}}
    print(f"\ndevice: {torch.cuda.get_device_name()}; Llama 3.1 8B shape with {layers} of 32 layers, seq 8192, GBS 32 "
          f"(mbs 1); model FLOPs/token = 6 (N_layers + N_output) + 6LSH = {fpt / 1e9:.1f} G; anchor "
          f"{ANCHOR_TFLOPS:.0f} TFLOP/s (Megatron-Bridge, 8B fp8, per H100 on 8)")
    print(f"command: python3 benchmarks/pretrain_throughput_8b.py --layers {layers} --steps {steps} --runs {' '.join(runs)}\n")
    print("| run | recompute | tokens/s | model TFLOP/s | peak GiB | vs peer's best | first loss |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {labels[name]} | error: {r['error'][-300:]!r} | | | | | |")
            continue
        ratio = r["tokens_per_s"] / best_peer if best_peer else float("nan")
        print(f"| {labels[name]} | {r.get('recompute', '-')} | {r['tokens_per_s']:,.0f} | "
              f"{r['tokens_per_s'] * fpt / 1e12:.0f} | {r['peak_gib']:.1f} | {ratio:.2f}x | "
              f"{r.get('loss_first', float('nan')):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/pretrain8b")))
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", nargs="*", default=list(RUNS))
    parser.add_argument("--peer", nargs="*", default=["plain", "checkpointing"])
    parser.add_argument("--peer-only", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_only:  # the peer's own process
        print(json.dumps(peer(args.layers, args.steps, args.peer_only == "checkpointing")))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for kind in args.peer:
        proc = subprocess.run([sys.executable, __file__, "--peer-only", kind, "--steps", str(args.steps),
                               "--layers", str(args.layers)], env=clean, capture_output=True, text=True)
        (args.out / f"peer_{kind}.log").write_text(proc.stdout + proc.stderr)
        last = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
        results[f"peer_{kind}"] = json.loads(last[0]) if last else {"error": proc.stderr[-1500:]}
    sys.path.insert(0, str(ROOT))
    data = synthetic_data(Path("/tmp/pretrain8b_text_document"), 400)
    for name in args.runs:
        results[name] = trainer(name, RUNS[name][1], args.layers, args.steps, data, args.out)
        (args.out / "pretrain_throughput_8b.json").write_text(json.dumps(results, indent=2))
    _print_table(results, args.layers, args.steps, args.runs)


if __name__ == "__main__":
    main()
