"""The Triton SwiGLU (workflow_scripts/inference/swiglu_triton.py) against the MLP's eager form (silu of the gate
half times the up half), on CPU under Triton's interpreter: widths that are not a multiple of its block, strided
rows, fp32 and fp16 (the interpreter has no bf16). The engine through it: tests/test_generate.py."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from workflow_scripts.inference import swiglu_triton as S  # noqa: E402


@pytest.mark.parametrize("rows,width,dtype", [(3, 5, torch.float32), (2, 1500, torch.float32), (4, 40, torch.float16)])
def test_swiglu_kernel_equals_the_eager_form(rows, width, dtype):
    g = torch.Generator().manual_seed(width)
    wide = (torch.randn(rows, 2, 2 * width + 3, generator=g) * 4).to(dtype)
    x = wide[:, 1, 1:2 * width + 1]  # rows of another stride, as a slice of a larger output
    gate, up = torch.chunk(x, 2, dim=-1)
    expected = F.silu(gate) * up
    out = S.swiglu(x)
    assert out.shape == (rows, width) and out.is_contiguous()
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.float(), expected.float(), atol=tol, rtol=tol)


def test_swiglu_kernel_refuses_an_odd_width():
    with pytest.raises(ValueError, match="even"):
        S.swiglu(torch.zeros(2, 7))
