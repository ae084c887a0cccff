"""What an fp8 KV cache (generate.py --kv-cache fp8, kv_fp8.py) changes in the logits, against what the bf16 model's
own rounding changes: the first prompts of benchmarks/generate_throughput_7b.py's work folder (its random
Llama-2-7B-shaped checkpoint, prompts of 719-898 tokens) run through the fast engine's prefill and decode steps three
ways, all fed the same tokens (the bf16 run's greedy choices): the bf16 model with its bf16 cache (the default), the
bf16 model with an fp8 cache, and the model in fp32 with an fp32 cache (TF32 off) as the reference. Prints, over the
decode steps, the largest and mean absolute logit difference from the reference and the argmax agreement with it.

Random weights give nearly flat logits, so argmax agreement here is a lower bound of what real weights show; the
accuracy that counts is the MLPerf run's ROUGE, which this cannot measure.

Run on the GPU machine after generate_throughput_7b.py has made its work folder (/tmp/generate7b):
    python3 benchmarks/kv_fp8_drift.py --out $OUT
`--work /tmp/generate7b_tiny` after `generate_throughput_7b.py --tiny --work /tmp/generate7b_tiny` is a CPU smoke run.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

PROMPTS = 16
STEPS = 32


def forced(model, vocab: int, prompts: list[list[int]], fp8: bool, steps: int, feed=None):
    """Logits [steps, b, vocab] (fp32) of `steps` decode steps after the prefill, fed `feed` [steps, b] (default:
    each step's own greedy choice), and the tokens fed."""
    import torch

    from workflow_scripts.inference import decode_engine as D

    param = next(model.parameters())
    tokens, pad = D.left_pad(prompts, param.device)
    positions = D.cache_positions(tokens.shape[1], steps + 1)
    cache = D.KVCache(model, len(prompts), positions, param.dtype, param.device, fp8=fp8)
    rope = D.RopeTable(model, positions, param.dtype)
    with torch.no_grad():
        last = D.prefill(model, tokens, pad, cache, rope)[:, :vocab]
        out, fed = [], []
        for step in range(steps):
            token = last.argmax(-1) if feed is None else feed[step]
            pos = torch.full((len(prompts),), tokens.shape[1] + step, device=param.device)
            last = D.decode_step(model, token, pos, pad, cache, rope, positions)[:, :vocab]
            out.append(last.float())
            fed.append(token)
    return torch.stack(out), torch.stack(fed)


def store_kernel_check(device) -> dict:
    """kv_fp8.store's Triton kernel against its torch form on `device` (the GPU's cast, not the interpreter's):
    bf16 vectors of 7B's head dim: the fraction of dequantized values that differ, their largest relative
    difference (one e4m3 step is 1/8 to 1/16), and the largest difference of the scales."""
    import torch

    from workflow_scripts.inference import kv_fp8

    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return {"skipped": "no GPU (TRITON_INTERPRET=1 runs the kernel on CPU)"}
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4096, 128, generator=gen) * torch.rand(4096, 1, generator=gen) * 30).to(torch.bfloat16)
    index = torch.randperm(8192, generator=gen)[:4096].to(device)
    written = []
    for kind in ("torch", "triton"):
        kv_fp8.STORE = kind
        codes = torch.zeros(8192, 128, dtype=torch.uint8, device=device)
        scales = torch.zeros(8192, device=device)
        kv_fp8.store(x.to(device), index, codes, scales)
        written.append((kv_fp8.dequantize(codes, scales, torch.float32), scales))
    kv_fp8.STORE = "auto"
    (mine, mine_scales), (theirs, theirs_scales) = written
    differ = mine != theirs  # near-ties may round either way: Triton's fp32 division is not torch's
    return {"values_differing": float(differ.float().mean()),
            "largest_relative_difference": float(((mine - theirs).abs() / mine.abs().clamp_min(1e-30))[differ].max())
            if differ.any() else 0.0, "scales_max_diff": float((mine_scales - theirs_scales).abs().max())}


def drift(work: Path, prompt_count: int, steps: int) -> dict:
    import pandas as pd
    import torch

    from workflow_scripts.inference.generate import load_model

    prompts = pd.read_pickle(work / "samples.pkl")["tok_input"].tolist()[:prompt_count]
    model, cfg = load_model(work / "mcore")
    model = model.to(torch.bfloat16).eval()
    bf16, feed = forced(model, cfg.vocab_size, prompts, False, steps)
    fp8, _ = forced(model, cfg.vocab_size, prompts, True, steps, feed)
    torch.backends.cuda.matmul.allow_tf32 = False
    reference, _ = forced(model.float(), cfg.vocab_size, prompts, False, steps, feed)

    def against(logits, base):
        diff = (logits - base).abs()
        return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                "argmax_agreement": float((logits.argmax(-1) == base.argmax(-1)).float().mean())}

    return {"prompts": len(prompts), "steps": steps, "logit_std": float(reference.std()),
            "store_kernel_vs_torch": store_kernel_check(next(model.parameters()).device),
            "bf16_cache_vs_fp32": against(bf16, reference), "fp8_cache_vs_fp32": against(fp8, reference),
            "fp8_cache_vs_bf16_cache": against(fp8, bf16)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/kv_fp8")))
    p.add_argument("--work", type=Path, default=Path("/tmp/generate7b"), help="generate_throughput_7b.py's work folder")
    p.add_argument("--prompts", type=int, default=PROMPTS)
    p.add_argument("--steps", type=int, default=STEPS)
    a = p.parse_args()
    from workflow_scripts.model.llama_model import shutdown_parallel

    try:
        result = drift(a.work, a.prompts, a.steps)
    finally:
        shutdown_parallel()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "kv_fp8_drift.json").write_text(json.dumps(result, indent=2))
    print(f"command: python3 benchmarks/kv_fp8_drift.py --out $OUT --work {a.work}")
    print(f"{result['prompts']} prompts, {result['steps']} decode steps, reference logits' std "
          f"{result['logit_std']:.3f}\n")
    print(f"store kernel vs torch: {json.dumps(result['store_kernel_vs_torch'])}")
    print("| run | max abs diff | mean abs diff | argmax agreement |\n|---|---:|---:|---:|")
    for name in ("bf16_cache_vs_fp32", "fp8_cache_vs_fp32", "fp8_cache_vs_bf16_cache"):
        r = result[name]
        print(f"| {name} | {r['max_abs']:.4f} | {r['mean_abs']:.5f} | {r['argmax_agreement']:.3f} |")


if __name__ == "__main__":
    main()
