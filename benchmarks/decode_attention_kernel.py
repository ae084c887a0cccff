"""Decode attention alone on one GPU: the split-KV Triton kernel against the engine's two batched matmuls, at the
7B benchmark's decode shape (MHA, 32 heads of 128) and a 70B-at-TP-8 shape (one group of 8 heads), and the kernel
over an fp8 cache (kv_fp8.py: codes and a scale per vector) at blocks of 64 and 128 positions (its default): max
|error| of each against an fp32 softmax over the unrounded cache, and microseconds per call (CUDA events, median of
50); GB/s counts the bytes each path reads. Prints a table and its command.

    python3 benchmarks/decode_attention_kernel.py
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workflow_scripts.inference import decode_attention_triton as T  # noqa: E402
from workflow_scripts.inference import decode_engine as D  # noqa: E402
from workflow_scripts.inference import kv_fp8  # noqa: E402

HBM_TB_S = 4.3


def _time(fn) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(50):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return statistics.median(times)


def main() -> None:
    print("command: python3 benchmarks/decode_attention_kernel.py")
    rows = ["| shape (rows, groups, heads/group, L) | path | us | GB/s of K+V | max err vs fp32 |", "|---|---|---:|---:|---:|"]
    for b, g, r, length in ((180, 32, 1, 1030), (64, 32, 1, 1030), (256, 1, 8, 1100)):
        gen = torch.Generator(device="cuda").manual_seed(0)
        cache = length + 200
        keys = torch.randn(b, g, cache, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
        values = torch.randn(b, g, cache, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
        q = torch.randn(b, g, r, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
        pad = torch.randint(0, 180, (b,), device="cuda", generator=gen)
        pos = torch.tensor([length - 1], device="cuda")
        ar = torch.arange(length, device="cuda")
        mask = ((ar[None, :] >= pad[:, None]) & (ar[None, :] <= pos))[:, None, None, :]
        k, v = keys[:, :, :length], values[:, :, :length]
        ref = torch.softmax((q.float() @ k.float().transpose(-1, -2) * 128 ** -0.5).masked_fill(~mask, float("-inf")),
                            -1) @ v.float()
        read = 2 * b * g * length * 128 * 2 / 1e9
        (kc, ks), (vc, vs) = (kv_fp8.quantize(t) for t in (keys, values))
        fp8 = (kc[:, :, :length], vc[:, :, :length], ks[:, :, :length], vs[:, :, :length])
        read_fp8 = 2 * b * g * length * kv_fp8.bytes_per_vector(128) / 1e9
        for name, fn, block, gb in (
                ("triton split-KV", lambda: T.decode_attention(q, k, v, pad, pos), None, read),
                ("two matmuls (fp32 softmax)", lambda: D._decode_scores(q, k, v, mask), None, read),
                ("triton split-KV, fp8 cache, block 64", lambda: T.decode_attention(q, *fp8[:2], pad, pos, *fp8[2:]),
                 64, read_fp8),
                ("triton split-KV, fp8 cache, block 128 (default)",
                 lambda: T.decode_attention(q, *fp8[:2], pad, pos, *fp8[2:]), 128, read_fp8)):
            default = T.BLOCK_POSITIONS_FP8
            T.BLOCK_POSITIONS_FP8 = block or default
            err = (fn().float() - ref).abs().max().item()
            us = _time(fn)
            T.BLOCK_POSITIONS_FP8 = default
            rows.append(f"| {b}, {g}, {r}, {length} | {name} | {us:,.0f} | {gb / (us / 1e6):,.0f} | {err:.2e} |")
    print(f"(HBM {HBM_TB_S} TB/s = {HBM_TB_S * 1000:,.0f} GB/s)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
