"""SwiGLU for the generation engine as one Triton kernel: silu(gate) * up over the MLP's fc1 output [..., 2F] (gate
then up: megatron's gated_linear_unit layout on each tensor-parallel rank) -> [..., F].

Why: the MLP's eager form (torch.chunk, silu, multiply) is two kernels, silu over the strided gate half (not
vectorised) and the product over its output; in the 7B benchmark's prefill they took 52 of a chunk's 783 ms
(benchmarks/generate_step_profile.py). megatron's fused form is torch.compile'd for every new batch shape, so
generate.load_model turns it off. Here each element is read and written once, rounded as the eager form rounds
(silu to the input dtype, then the product), computed in fp32. Tested on CPU under Triton's interpreter
(tests/test_swiglu_triton.py).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton keep the MLP's own forward
    triton = None

BLOCK = 1024  # output elements per program


def available(device: torch.device) -> bool:
    """The kernel runs on CUDA devices when Triton is installed (on CPU only under TRITON_INTERPRET=1, in tests)."""
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _swiglu_kernel(x_ptr, out_ptr, stride_x, width, BLOCK: tl.constexpr):
        row, block = tl.program_id(0), tl.program_id(1)
        c = block * BLOCK + tl.arange(0, BLOCK)
        inside = c < width
        gate = tl.load(x_ptr + row * stride_x + c, mask=inside, other=0.0)
        up = tl.load(x_ptr + row * stride_x + width + c, mask=inside, other=0.0)
        g = gate.to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)
        tl.store(out_ptr + row * width + c, (act * up.to(tl.float32)).to(gate.dtype), mask=inside)


def swiglu(x: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :F]) * x[..., F:] for x [..., 2F] (rows of any stride, the last dim contiguous), contiguous."""
    if x.shape[-1] % 2 or x.stride(-1) != 1:
        raise ValueError(f"swiglu needs an even, contiguous last dim, got {tuple(x.shape)} strides {x.stride()}")
    width = x.shape[-1] // 2
    flat = x.reshape(-1, x.shape[-1])
    out = torch.empty(*x.shape[:-1], width, dtype=x.dtype, device=x.device)
    _swiglu_kernel[(flat.shape[0], triton.cdiv(width, BLOCK))](flat, out, flat.stride(0), width, BLOCK=BLOCK)
    return out
