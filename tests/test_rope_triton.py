"""The in-place Triton RoPE (workflow_scripts/inference/rope_triton.py) against the engine's torch form
(decode_engine._rotate), on CPU under Triton's interpreter: per-row positions (left padding), strided views of a
fused QKV output, head counts that are not powers of two or exceed one program's block, head dims below the tile,
fp32 and fp16 (the interpreter has no bf16)."""
import pytest
import torch

pytest.importorskip("triton")

from workflow_scripts.inference import decode_engine as D  # noqa: E402
from workflow_scripts.inference import rope_triton as R  # noqa: E402


def _tables(n: int, dim: int, dtype):
    angles = torch.arange(n, dtype=torch.float32)[:, None] * 10000 ** (-torch.arange(0, dim, 2) / dim)
    angles = torch.cat((angles, angles), -1)
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


@pytest.mark.parametrize("s,b,heads,dim,dtype", [
    (7, 3, 5, 16, torch.float32),   # prefill: ragged positions, 5 heads (not a power of two)
    (1, 4, 40, 32, torch.float32),  # a decode step; 40 heads: two programs of heads per token
    (5, 2, 3, 8, torch.float16),    # head dim 8: half of 4 below the tile of 16, masked
])
def test_rope_kernel_equals_the_torch_rotation(s, b, heads, dim, dtype):
    g = torch.Generator().manual_seed(heads * dim)
    cos, sin = _tables(64, dim, dtype)
    positions = torch.randint(0, 64, (b, s), generator=g)
    # a strided view, as the query of a fused QKV projection: [s, b, heads, dim] inside [s, b, heads + 2, dim]
    qkv = torch.randn(s, b, heads + 2, dim, generator=g).to(dtype)
    t = qkv[:, :, 1:heads + 1]
    expected = D._rotate(t.clone(), cos[positions].transpose(0, 1).unsqueeze(2),
                         sin[positions].transpose(0, 1).unsqueeze(2))
    untouched = (qkv[:, :, 0].clone(), qkv[:, :, -1].clone())
    out = R.rotate_(t, cos, sin, positions)
    assert out.data_ptr() == t.data_ptr()
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(t.float(), expected.float(), atol=tol, rtol=tol)
    assert torch.equal(qkv[:, :, 0], untouched[0]) and torch.equal(qkv[:, :, -1], untouched[1])


def test_rope_kernel_refuses_a_table_of_another_head_dim():
    cos, sin = _tables(8, 16, torch.float32)
    with pytest.raises(ValueError, match="head dim 32"):
        R.rotate_(torch.zeros(1, 1, 2, 32), cos, sin, torch.zeros(1, 1, dtype=torch.long))
