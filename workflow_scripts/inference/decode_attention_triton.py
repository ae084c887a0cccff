"""Decode attention (one new token per row) as a split-KV Triton kernel: each program reads one (row, kv group)'s
cached keys and values once, over one slice of positions, for all the query heads of that group, with an online
softmax; a few torch ops merge the slices. It reads only the row's written positions (from its left padding `pad` to
its own `pos`, both on the device), so one CUDA graph serves every step of a batch, and padding costs no memory traffic.

Why: a decode step is bound by reading the KV cache (a 7B Llama without GQA reads ~6x its weights per step at batch
148); the two batched matmuls of `decode_engine._decode_scores` also read the masked padding, materialise fp32 scores
and launch five kernels per layer. Tested on CPU under Triton's interpreter (tests/test_decode_attention_triton.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton keep the matmul path
    triton = None


class Launch(NamedTuple):
    """How the kernel is launched for one kind of cache: key positions per inner step of a program, and Triton's
    warps per program and software-pipelining stages of the loop (4 and 3 are Triton's own defaults)."""
    block: int
    warps: int = 4
    stages: int = 3


# per cache kind; the fp8 codes take twice the positions a step for the same bytes (one H200: 702 us against 959 at
# 64 for batch 180 of the 7B shape). benchmarks/decode_attention_kernel.py --sweep times 27 launches of each: for
# bf16 it found (128, 4, 2) 5% faster alone (779 us against 821), yet the entry point ran 1.5% slower with it (4,120
# and 4,116 new tokens/s against 4,187 and 4,175 in one call), so the committed launches stay (docs/performance.md)
LAUNCH = {"model": Launch(64), "fp8": Launch(128)}
MIN_PROGRAMS = 528  # split the positions until the grid has this many programs (4 per SM of an H100/H200)


def available(device: torch.device) -> bool:
    """The kernel runs on CUDA devices when Triton is installed (on CPU only under TRITON_INTERPRET=1, in tests)."""
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _split_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, pad_ptr, pos_ptr, out_ptr, lse_ptr,
                      stride_qb, stride_qg, stride_qr, stride_kb, stride_kg, stride_kl, stride_vb, stride_vg,
                      stride_vl, stride_sb, stride_sg, groups, heads_per_group, split_len, dim, scale,
                      BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, DIM: tl.constexpr, PRECISION: tl.constexpr,
                      FP8: tl.constexpr, HALF: tl.constexpr):
        bg, split, splits = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
        b, g = bg // groups, bg % groups
        lo = tl.maximum(split * split_len, tl.load(pad_ptr + b))
        hi = tl.minimum((split + 1) * split_len, tl.load(pos_ptr + b) + 1)  # positions lo..hi-1 are written and valid
        r = tl.arange(0, BLOCK_R)
        d = tl.arange(0, DIM)  # DIM: the head dim rounded up to a power of two >= 16 (tl.dot's tiles), masked
        q = tl.load(q_ptr + b * stride_qb + g * stride_qg + r[:, None] * stride_qr + d[None, :],
                    mask=(r[:, None] < heads_per_group) & (d[None, :] < dim), other=0.0)
        if FP8 and HALF:  # fp8 codes convert natively to fp16 (to bf16 only through fp32: the kernel's bottleneck)
            q = q.to(tl.float16)
        m = tl.full([BLOCK_R], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_R], tl.float32)
        acc = tl.zeros([BLOCK_R, DIM], tl.float32)
        k_base = k_ptr + b * stride_kb + g * stride_kg
        v_base = v_ptr + b * stride_vb + g * stride_vg
        s_offset = b * stride_sb + g * stride_sg  # FP8: the per-position scales [b, groups, L] of keys and values
        for start in range(lo, hi, BLOCK_L):  # every block holds >= 1 valid position, so m turns finite at once
            p = start + tl.arange(0, BLOCK_L)
            valid = p < hi
            k = tl.load(k_base + p[:, None] * stride_kl + d[None, :], mask=valid[:, None] & (d[None, :] < dim),
                        other=0.0)
            if FP8:  # uint8 codes of e4m3 numbers: exact in fp16 (or fp32), times the position's scale
                k = k.to(tl.float8e4nv, bitcast=True).to(q.dtype)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(tl.float32) * scale
            if FP8:
                scores = scores * tl.load(ks_ptr + s_offset + p, mask=valid, other=0.0)[None, :]
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            alpha = tl.exp(m - m_new)
            probs = tl.exp(scores - m_new[:, None])
            total = total * alpha + tl.sum(probs, 1)
            v = tl.load(v_base + p[:, None] * stride_vl + d[None, :], mask=valid[:, None] & (d[None, :] < dim),
                        other=0.0)
            if FP8:  # each position's value scale, over the block's largest: weights in [0, 1], no fp16 underflow
                v_scale = tl.load(vs_ptr + s_offset + p, mask=valid, other=0.0)
                v_max = tl.max(v_scale, 0)
                v_max = tl.where(v_max > 0, v_max, 1.0)
                v = v.to(tl.float8e4nv, bitcast=True).to(q.dtype)
                weights = (probs * (v_scale / v_max)[None, :]).to(q.dtype)
                acc = acc * alpha[:, None] + tl.dot(weights, v, input_precision=PRECISION).to(tl.float32) * v_max
            else:
                acc = acc * alpha[:, None] + tl.dot(probs.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
            m = m_new
        # an empty slice (all its positions padding or not yet written) leaves lse = -inf: weight 0 in the merge
        lse = tl.where(total > 0, m + tl.log(total), float("-inf"))
        safe = tl.where(total > 0, total, 1.0)
        row = (bg * splits + split) * BLOCK_R + r
        tl.store(lse_ptr + row, lse)
        tl.store(out_ptr + row[:, None] * DIM + d[None, :], acc / safe[:, None])


def _splits(rows_groups: int, positions: int, block: int | None = None) -> tuple[int, int]:
    """(slices, positions per slice): enough programs to fill the GPU, each slice whole blocks of `block`
    (default: the model-dtype cache's) positions."""
    block = block or LAUNCH["model"].block
    blocks = -(-positions // block)
    splits = max(1, min(blocks, -(-MIN_PROGRAMS // rows_groups)))
    per_split = -(-blocks // splits) * block
    return -(-positions // per_split), per_split


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pad: torch.Tensor,
                     pos: torch.Tensor, key_scales: torch.Tensor | None = None,
                     value_scales: torch.Tensor | None = None) -> torch.Tensor:
    """q [b, groups, heads_per_group, d] against keys/values [b, groups, L, d] (strided views of the cache are fine),
    attending to positions pad[r]..pos[r] of each row r (pos [b], or [1] for all rows); returns
    [b, groups, heads_per_group, d] in q's dtype. With scales [b, groups, L] (an fp8 cache, kv_fp8.py), keys and
    values are uint8 e4m3 codes, each position's vector standing for codes * its scale."""
    rows, groups, per_group, dim = q.shape
    if pos.numel() == 1:
        pos = pos.expand(rows).contiguous()
    if q.stride(-1) != 1 or keys.stride(-1) != 1 or values.stride(-1) != 1:
        raise ValueError("decode_attention needs the head dimension contiguous")
    fp8 = key_scales is not None
    if fp8 and (key_scales.stride() != value_scales.stride() or key_scales.stride(-1) != 1):
        raise ValueError("decode_attention needs key and value scales of one layout, positions contiguous")
    scales = (key_scales, value_scales) if fp8 else (q, q)  # unread without FP8
    block_r = max(16, triton.next_power_of_2(per_group))  # tl.dot wants >= 16 rows
    block_d = max(16, triton.next_power_of_2(dim))
    launch = LAUNCH["fp8" if fp8 else "model"]
    splits, per_split = _splits(rows * groups, keys.shape[2], launch.block)
    partial = torch.empty(rows * groups * splits * block_r, block_d, dtype=torch.float32, device=q.device)
    lse = torch.empty(rows * groups * splits * block_r, dtype=torch.float32, device=q.device)
    _split_kernel[(rows * groups, splits)](
        q, keys, values, *scales, pad, pos, partial, lse, q.stride(0), q.stride(1), q.stride(2), keys.stride(0),
        keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2),
        *(scales[0].stride()[:2] if fp8 else (0, 0)), groups, per_group, per_split, dim, dim ** -0.5,
        BLOCK_R=block_r, BLOCK_L=launch.block, DIM=block_d,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", FP8=fp8,  # fp32 models: no TF32 rounding
        HALF=q.dtype != torch.float32, num_warps=launch.warps, num_stages=launch.stages)
    lse = lse.view(rows, groups, splits, block_r)[..., :per_group]
    partial = partial.view(rows, groups, splits, block_r, block_d)[..., :per_group, :dim]
    weight = torch.softmax(lse, dim=2)  # every row has >= 1 valid position, so some slice is finite
    return (weight.unsqueeze(-1) * partial).sum(2).to(q.dtype)
