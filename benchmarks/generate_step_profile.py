"""Where a generation batch's time goes on one GPU: the fast engine's prefill, its CUDA-graph captures and its decode
steps, timed apart (synchronised), for each decode attention and RoPE setting; then one eager decode step and one prefill chunk under
torch.profiler, kernels summed by kind (GEMM, attention, softmax, elementwise/copy, norm/reduce, other).

Same weights and prompts as benchmarks/generate_throughput_7b.py (a random Llama-2-7B-shaped checkpoint converted by
the project; prompts of 719-898 random ids; 256 new tokens); the batch is the entry point's first: its `--batch-size
auto` rows of the longest prompts (generate.length_batches), cache sized as generate.py sizes it.

Run on the GPU machine (shared/gpu/README.md brings TE and megatron-core to /root/site):
    python3 benchmarks/generate_step_profile.py --out $OUT
`--tiny` runs it on CPU with the 2-layer shape (a smoke test; the profiler then lists CPU ops). Prints a table last.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

KINDS = (("fp8 store", ("store_kernel",)), ("attention", ("fmha", "flash", "attention", "split_kernel")), ("gemm", ("gemm", "gemv", "cutlass", "xmma",
         "nvjet", "matmul", "mm", "bmm")), ("softmax", ("softmax",)), ("norm/reduce", ("norm", "reduce")),
         ("elementwise/copy", ("elementwise", "vectorized", "copy", "cat", "index", "fill", "mul", "add", "neg",
                               "where", "masked")))


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, words in KINDS if any(w in low for w in words)), "other")


def synced(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def timed_batch(model, vocab: int, prompts: list[list[int]], setting: str, device) -> dict:
    """generate_batch_fast over `prompts` with its prefill and graph captures timed (synchronised wrappers), at
    `setting` = "decode attention/rope[/kv cache]" (decode_engine.DECODE_ATTENTION / ROPE / KV_CACHE)."""
    from workflow_scripts.inference import decode_engine as D
    from workflow_scripts.inference.continuous_batching import generate_batch_fast

    _apply(setting)
    spent = defaultdict(float)
    counts = defaultdict(int)
    originals = D.prefill, D.Decoder._capture

    def wrap(name, fn):
        def inner(*args, **kwargs):
            start = synced(device)
            result = fn(*args, **kwargs)
            spent[name] += synced(device) - start
            counts[name] += 1
            return result
        return inner

    D.prefill, D.Decoder._capture = wrap("prefill", originals[0]), wrap("capture", originals[1])
    try:
        start = synced(device)
        out = generate_batch_fast(model, vocab, prompts, 256, eos_id=2, min_new_tokens=256)
        total = synced(device) - start
    finally:
        D.prefill, D.Decoder._capture = originals
    steps = len(out[0]) - 1
    decode = total - spent["prefill"] - spent["capture"]
    return {"setting": setting, "attention": D.decode_attention_kind(device), "rope": D.rope_kind(device),
            "kv_cache": D.KV_CACHE,
            "rows": len(prompts), "seconds": total, "prefill_s": spent["prefill"],
            "capture_s": spent["capture"], "captures": counts["capture"], "decode_s": decode, "steps": steps,
            "ms_per_step": decode / steps * 1e3, "tokens_per_s": len(prompts) * len(out[0]) / total}


def _apply(setting: str) -> bool:
    """Set decode_engine's decode attention, RoPE and KV cache from "attention/rope[/kv cache]"; True for fp8."""
    from workflow_scripts.inference import decode_engine as D

    parts = setting.split("/")
    D.DECODE_ATTENTION, D.ROPE = parts[:2]
    D.KV_CACHE = parts[2] if len(parts) > 2 else "model"
    return D.KV_CACHE == "fp8"


def kernel_profile(fn, device) -> dict[str, float]:
    """Milliseconds of device time by kernel kind over one call of `fn` (after a warm-up call)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    synced(device)
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        fn()
        synced(device)
    by_kind: dict[str, float] = defaultdict(float)
    top = []
    for event in prof.key_averages():
        us = event.device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if device.type == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if us <= 0:
            continue
        by_kind[kind(event.key)] += us / 1e3
        top.append((us / 1e3, event.count, event.key[:90]))
    top.sort(reverse=True)
    return {"by_kind_ms": dict(by_kind), "top": top[:12]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/generate_profile")))
    p.add_argument("--work", type=Path, default=Path("/tmp/generate7b"), help="checkpoint and prompts (shared with "
                   "generate_throughput_7b.py)")
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--settings", nargs="+", default=["auto/auto", "triton/torch", "matmul/torch"],
                   help="decode attention/rope[/kv cache: model or fp8] of each timed batch, in order (the first pays "
                        "the process's warm-up)")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    import generate_throughput_7b as G

    G.prepare(a.work, a.out, a.samples, a.tiny)
    report = profile_batch(a)
    (a.out / "generate_step_profile.json").write_text(json.dumps(report, indent=2))
    print_report(report, a.tiny)


def profile_batch(a: argparse.Namespace) -> dict:
    import pandas as pd
    import torch

    from workflow_scripts.inference import decode_engine as D
    from workflow_scripts.inference.batch_size import resolve_batch_size
    from workflow_scripts.inference.generate import length_batches, load_model

    model, cfg = load_model(a.work / "mcore", 1)
    model.eval()
    device = next(model.parameters()).device
    prompts = pd.read_pickle(a.work / "samples.pkl")["tok_input"].tolist()
    positions = D.cache_positions(max(map(len, prompts)), 256)
    rows = resolve_batch_size("auto", model, positions) if device.type == "cuda" else 4
    batch = [prompts[r] for r in length_batches(prompts, rows)[0]]
    report = {"rows": rows, "cache_positions": positions, "longest_prompt": max(map(len, batch)), "runs": [],
              "kernels": {}}
    with torch.no_grad():
        for setting in a.settings:
            report["runs"].append(timed_batch(model, cfg.vocab_size, batch, setting, device))
            _free()  # one batch's cache (and its graphs' pool) at a time: `auto` sized the batch for one
            report["kernels"][f"decode step, {setting} (eager)"] = kernel_profile(
                _one_step(model, batch, setting, device), device)
            _free()
            report["kernels"][f"prefill chunk, {setting}"] = kernel_profile(
                _one_prefill_chunk(model, batch, setting, device), device)
            _free()
    return report


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _one_step(model, batch: list[list[int]], setting: str, device):
    """An eager decode step of `batch` at its middle decode position (cache filled by a prefill)."""
    import torch

    from workflow_scripts.inference import decode_engine as D

    fp8 = _apply(setting)
    tokens, pad = D.left_pad(batch, device)
    dtype = next(model.parameters()).dtype
    cache = D.KVCache(model, len(batch), D.cache_positions(tokens.shape[1], 256), dtype, device, fp8)
    rope = D.RopeTable(model, cache.keys[0].shape[2], dtype)
    token = D.prefill(model, tokens, pad, cache, rope)[:, :100].argmax(-1)
    pos = tokens.shape[1] + 127
    length = D._round_up(pos + 1, D.KV_BLOCK) if D.decode_attention_kind(device) != "triton" else cache.keys[0].shape[2]
    at = torch.tensor([pos], device=device)
    return lambda: D.decode_step(model, token, at, pad, cache, rope, length)


def _one_prefill_chunk(model, batch: list[list[int]], setting: str, device):
    """The prefill of the first chunk of rows the engine prefills at once (PREFILL_TOKENS)."""
    from workflow_scripts.inference import decode_engine as D

    tokens, pad = D.left_pad(batch, device)
    chunk = min(len(batch), max(1, D.PREFILL_TOKENS // tokens.shape[1]))
    tokens, pad = tokens[:chunk], pad[:chunk]
    dtype = next(model.parameters()).dtype
    cache = D.KVCache(model, chunk, tokens.shape[1], dtype, device, _apply(setting))
    rope = D.RopeTable(model, tokens.shape[1], dtype)
    return lambda: D.prefill(model, tokens, pad, cache, rope)


def print_report(report: dict, tiny: bool) -> None:
    print("command: python3 benchmarks/generate_step_profile.py --out $OUT" + (" --tiny" if tiny else ""))
    print(f"batch: {report['rows']} rows, longest prompt {report['longest_prompt']}, cache {report['cache_positions']}"
          " positions, 256 new tokens")
    for name, prof in report["kernels"].items():
        total = sum(prof["by_kind_ms"].values())
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(prof["by_kind_ms"].items(), key=lambda kv: -kv[1]))
        print(f"\n{name}: {total:.2f} ms of kernels ({kinds})")
        for ms, count, key in prof["top"][:8]:
            print(f"  {ms:8.3f} ms  x{count:<5d} {key}")
    print("\n| setting (attention/rope[/kv cache]) | used | rows | seconds | prefill s | captures | capture s | decode s | ms/step |"
          " new tokens/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["runs"]:
        print(f"| {r['setting']} | {r['attention']}/{r['rope']} | {r['rows']} | {r['seconds']:.2f} | {r['prefill_s']:.2f} | {r['captures']} | "
              f"{r['capture_s']:.2f} | {r['decode_s']:.2f} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
