"""Benchmark of greedy generation: megatron-core KV cache, batched (workflow_scripts.inference.generate) vs re-running the
whole sequence every step without a cache (the naive peer), same model, prompts and thread count, same process.

Both must produce the same tokens (checked). Model: the demo Llama shape (4096 vocab, hidden 64, 2 layers, GQA 8/2)
with random weights, converted to megatron-core and cached in benchmarks/out/generate/ (git-ignored).

Run:  .venv/bin/python benchmarks/generate_kv_cache.py [--samples 16] [--max-new-tokens 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "generate"


def model_dir() -> Path:
    from workflow_scripts.convert.conversion import hf_to_mcore
    from workflow_scripts.demo.demo_llama import write_llama
    from workflow_scripts.model.llama_model import LlamaConfig

    mcore = OUT / "mcore"
    if not mcore.exists():
        cfg = LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=160, num_layers=2, head_dim=8,
                          num_attention_heads=8, num_query_groups=2, max_position_embeddings=2048)
        hf = OUT / "hf"
        if not hf.exists():
            write_llama(hf, cfg, seed=5, init_std=0.3)
        hf_to_mcore(hf, mcore, tp=1, pp=1, spec="local")
    return mcore


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from workflow_scripts.inference import generate as G

    model, cfg = G.load_model(model_dir())
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 4096, (int(n),), generator=gen).tolist()
               for n in torch.randint(50, 400, (args.samples,), generator=gen)]
    eos = 0  # an id the random model does not emit here: every sample generates max_new_tokens
    G.generate_batch(model, cfg.vocab_size, prompts[:2], 2, eos)  # warm-up
    t0 = time.perf_counter()
    cached = G.generate_all(model, cfg.vocab_size, prompts, args.max_new_tokens, eos, batch_size=args.batch_size)
    t1 = time.perf_counter()
    naive = [G.generate_uncached(model, cfg.vocab_size, pr, args.max_new_tokens, eos) for pr in prompts]
    t2 = time.perf_counter()
    assert cached == naive, "cached and uncached greedy outputs differ"
    tokens = sum(map(len, cached))
    print(f"command: .venv/bin/python benchmarks/generate_kv_cache.py --samples {args.samples} "
          f"--max-new-tokens {args.max_new_tokens} --batch-size {args.batch_size} --threads {args.threads}")
    print(f"prompts {args.samples} (50-399 tokens), {tokens} generated tokens, identical outputs: yes")
    print("| method | seconds | tokens/s | speed-up |")
    print("|---|---|---|---|")
    print(f"| KV cache, batch {args.batch_size} (ours) | {t1 - t0:.2f} | {tokens / (t1 - t0):.1f} | {(t2 - t1) / (t1 - t0):.1f}x |")
    print(f"| no cache, re-forward, batch 1 | {t2 - t1:.2f} | {tokens / (t2 - t1):.1f} | 1.0x |")


if __name__ == "__main__":
    main()
