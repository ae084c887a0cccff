"""An fp8 (e4m3) KV cache: each cached key or value vector (one row, KV group and position: head_dim numbers) is
stored as head_dim fp8 codes and one fp32 scale, its largest magnitude over E4M3_MAX.

Why: a decode step of a Llama without GQA is bound by reading the KV cache (7B: 512 KB a cached token in bf16,
~6x the weights per step at batch 180), and fp8 codes halve those reads and the cache's memory, so twice the rows fit.
A scale per vector needs no calibration and bounds each element's error by 1/28 of the vector's largest magnitude
(half of e4m3's step at the top of its range), whatever outliers other positions or heads hold. The codes are kept
as uint8, so every torch op that moves them (index_copy_, index_select) works on any device; the Triton decode
kernel reinterprets them as fp8 (decode_attention_triton.py). NVIDIA's MLPerf llama2-70b submissions run an fp8 KV
cache; whether this one keeps 99% of the reference ROUGE is for the accuracy run's score to show (random weights
cannot).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton quantize with torch ops
    triton = None

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
CODE_DTYPE = torch.uint8
SCALE_DTYPE = torch.float32
STORE = "auto"  # "auto" (the Triton kernel on a GPU with Triton, else torch), "torch" or "triton"
BLOCK_VECTORS = 16  # vectors quantized by one program of the store kernel


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., d] -> (uint8 codes [..., d], fp32 scales [...]) with x ~ codes * scale; an all-zero vector gets
    scale 0 and zero codes."""
    amax = torch.linalg.vector_norm(x.float(), ord=float("inf"), dim=-1)
    scale = amax / E4M3_MAX
    inverse = torch.where(amax > 0, E4M3_MAX / amax, torch.zeros_like(amax))
    codes = (x.float() * inverse.unsqueeze(-1)).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return codes.view(CODE_DTYPE), scale


def dequantize(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values uint8 `codes` [..., d] with `scale` [...] stand for, in `dtype`."""
    return (codes.view(torch.float8_e4m3fn).float() * scale.unsqueeze(-1)).to(dtype)


def bytes_per_vector(dim: int) -> int:
    """Cache bytes of one cached key or value vector of `dim` numbers: the codes and the scale."""
    return dim * CODE_DTYPE.itemsize + SCALE_DTYPE.itemsize


def store(x: torch.Tensor, index: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> None:
    """Quantize the vectors x [..., d] and write each one at flat position index[...] (same leading shape) of the
    cache's codes viewed as [-1, d] and its scales viewed as [-1]. On a GPU one Triton kernel does it all (the torch
    form is ~8 kernels per tensor, in every layer of every decode step)."""
    dim = x.shape[-1]
    flat, where = x.reshape(-1, dim), index.reshape(-1)
    if STORE == "triton" or (STORE == "auto" and triton is not None and x.device.type == "cuda"):
        grid = (-(-flat.shape[0] // BLOCK_VECTORS),)
        _store_kernel[grid](flat, where, codes, scales, flat.shape[0], flat.stride(0), dim, E4M3_MAX,
                            DIM=triton.next_power_of_2(dim), BLOCK=BLOCK_VECTORS)
        return
    new, scale = quantize(flat)
    codes.view(-1, dim).index_copy_(0, where, new)
    scales.view(-1).index_copy_(0, where, scale)


if triton is not None:

    @triton.jit
    def _store_kernel(x_ptr, index_ptr, codes_ptr, scales_ptr, count, stride_x, dim, e4m3_max,
                      DIM: tl.constexpr, BLOCK: tl.constexpr):
        vec = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        d = tl.arange(0, DIM)
        live = vec < count
        inside = live[:, None] & (d[None, :] < dim)
        x = tl.load(x_ptr + vec[:, None] * stride_x + d[None, :], mask=inside, other=0.0).to(tl.float32)
        amax = tl.max(tl.abs(x), 1)
        inverse = tl.where(amax > 0, e4m3_max / amax, 0.0)
        scaled = tl.clamp(x * inverse[:, None], -e4m3_max, e4m3_max)
        # rounded to e4m3's grid in fp32 first (nearest, ties to even: torch's rounding), so the cast is exact: the
        # interpreter's own fp32 -> fp8 rounding drops the carry into the exponent (120 -> 64, not 128)
        bits = scaled.to(tl.int32, bitcast=True)
        normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)  # 3 mantissa bits
        steps = tl.floor(tl.abs(scaled) * 512.0 + 0.5) / 512.0  # below 2**-6 e4m3 steps by 2**-9 (ties: up)
        subnormal = tl.where(scaled < 0, -steps, steps)
        code = tl.where(tl.abs(scaled) < 0.015625, subnormal, normal).to(tl.float8e4nv)
        where = tl.load(index_ptr + vec, mask=live, other=0)
        tl.store(codes_ptr + where[:, None] * dim + d[None, :], code.to(tl.uint8, bitcast=True), mask=inside)
        tl.store(scales_ptr + where, amax / e4m3_max, mask=live)
