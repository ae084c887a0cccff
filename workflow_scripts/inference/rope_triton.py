"""RoPE for the generation engine as one Triton kernel, in place: each program rotates all heads of one token at that
row's own position (left-padded rows start at different positions), reading cos/sin from the engine's table.

Why: the torch form (t * cos + cat(-x2, x1) * sin) is five elementwise kernels and a concatenation per tensor; in the
7B benchmark's prefill they took 16% of a chunk's GPU time (benchmarks/generate_step_profile.py), and the queries and
keys are read once here instead. Non-interleaved, over the whole head dim, as decode_engine._rotate (megatron's
_apply_rotary_pos_emb_bshd, Llama's rotate_half); computed in fp32 and rounded once. Tested on CPU under Triton's
interpreter (tests/test_rope_triton.py).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton keep the torch form
    triton = None

MAX_BLOCK_HEADS = 32  # heads per program (a [heads, half] tile of each half)


def available(device: torch.device) -> bool:
    """The kernel runs on CUDA devices when Triton is installed (on CPU only under TRITON_INTERPRET=1, in tests)."""
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _rope_kernel(t_ptr, cos_ptr, sin_ptr, pos_ptr, stride_ts, stride_tb, stride_th, stride_ps, stride_pb,
                     stride_table, batch, heads, half, BLOCK_H: tl.constexpr, HALF: tl.constexpr):
        token, block = tl.program_id(0), tl.program_id(1)
        s, b = token // batch, token % batch
        p = tl.load(pos_ptr + s * stride_ps + b * stride_pb)
        d = tl.arange(0, HALF)
        dm = d < half
        cos1 = tl.load(cos_ptr + p * stride_table + d, mask=dm, other=0.0).to(tl.float32)
        cos2 = tl.load(cos_ptr + p * stride_table + half + d, mask=dm, other=0.0).to(tl.float32)
        sin1 = tl.load(sin_ptr + p * stride_table + d, mask=dm, other=0.0).to(tl.float32)
        sin2 = tl.load(sin_ptr + p * stride_table + half + d, mask=dm, other=0.0).to(tl.float32)
        h = block * BLOCK_H + tl.arange(0, BLOCK_H)
        m = (h[:, None] < heads) & dm[None, :]
        base = t_ptr + s * stride_ts + b * stride_tb + h[:, None] * stride_th + d[None, :]
        x1 = tl.load(base, mask=m, other=0.0)
        x2 = tl.load(base + half, mask=m, other=0.0)
        y1 = x1.to(tl.float32) * cos1[None, :] - x2.to(tl.float32) * sin1[None, :]
        y2 = x2.to(tl.float32) * cos2[None, :] + x1.to(tl.float32) * sin2[None, :]
        tl.store(base, y1.to(x1.dtype), mask=m)
        tl.store(base + half, y2.to(x2.dtype), mask=m)


def rotate_(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate `t` [s, b, heads, d] (any strides, head dim contiguous) in place: token (i, row) at positions[row, i]
    of the tables cos/sin [n, d]; returns `t`."""
    s, b, heads, dim = t.shape
    if t.stride(-1) != 1 or cos.stride(-1) != 1 or sin.stride(-1) != 1 or cos.stride(0) != sin.stride(0):
        raise ValueError("rope_triton.rotate_ needs the head dimension contiguous and cos/sin of one layout")
    if dim % 2 or cos.shape[-1] != dim:
        raise ValueError(f"rope_triton.rotate_: head dim {dim} against a table of {cos.shape[-1]}")
    half = dim // 2
    block_h = min(MAX_BLOCK_HEADS, triton.next_power_of_2(heads))
    _rope_kernel[(s * b, triton.cdiv(heads, block_h))](
        t, cos, sin, positions, t.stride(0), t.stride(1), t.stride(2), positions.stride(1), positions.stride(0),
        cos.stride(0), b, heads, half, BLOCK_H=block_h, HALF=max(16, triton.next_power_of_2(half)))
    return t
