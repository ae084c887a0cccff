"""The Triton decode-attention kernel (workflow_scripts/inference/decode_attention_triton.py) against a plain masked
softmax, run on CPU under Triton's interpreter: GQA and MHA, ragged left padding, slices that are all padding or all
unwritten positions, strided cache views, head dims below 16, fp32 and fp16 (NumPy, under the interpreter, has no bfloat16; the kernel is
dtype-generic and runs bf16 on the GPU)."""
import pytest
import torch

triton = pytest.importorskip("triton")

from triton_interpreter import patch_scalar_index  # noqa: E402

from workflow_scripts.inference import decode_attention_triton as T  # noqa: E402


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):  # conftest.py sets TRITON_INTERPRET=1
    patch_scalar_index(monkeypatch)


def _reference(q, keys, values, pad, pos):
    length = keys.shape[2]
    ar = torch.arange(length)
    allowed = (ar[None, :] >= pad[:, None]) & (ar[None, :] <= torch.as_tensor(pos).reshape(-1, 1))
    scores = torch.einsum("bgrd,bgld->bgrl", q.float(), keys.float()) * q.shape[-1] ** -0.5
    probs = scores.masked_fill(~allowed[:, None, None, :], float("-inf")).softmax(-1)
    return torch.einsum("bgrl,bgld->bgrd", probs, values.float())


@pytest.mark.parametrize("rows,groups,per_group,dim,cache,pos,dtype", [
    (3, 2, 4, 16, 200, 150, torch.float32),   # GQA, several slices, the last ones beyond pos
    (2, 4, 1, 32, 130, 129, torch.float32),   # MHA (one head per group), pos at the cache's end
    (2, 2, 4, 8, 70, 69, torch.float32),     # head dim 8 < tl.dot's 16: padded and masked
    (4, 1, 8, 64, 96, 70, torch.float16),     # 70B-like group of 8 heads, half precision (the interpreter has no bf16)
])
def test_decode_attention_kernel_equals_the_masked_softmax(rows, groups, per_group, dim, cache, pos, dtype,
                                                            monkeypatch):
    monkeypatch.setattr(T, "MIN_PROGRAMS", 64)  # many slices even at these small grids
    g = torch.Generator().manual_seed(rows * dim)
    full_k = torch.randn(rows, groups, cache + 7, dim, generator=g).to(dtype)
    full_v = torch.randn(rows, groups, cache + 7, dim, generator=g).to(dtype)
    keys, values = full_k[:, :, :cache], full_v[:, :, :cache]  # strided views, as the engine passes them
    q = torch.randn(rows, groups, per_group, dim, generator=g).to(dtype)
    pad = torch.tensor([0, 67, 5, 69][:rows])  # 67, 69 > one slice of 64: whole slices of padding
    pos_t = torch.tensor([pos])
    assert T._splits(rows * groups, cache)[0] > 1
    out = T.decode_attention(q, keys, values, pad, pos_t)
    want = _reference(q, keys, values, pad, pos)
    assert out.dtype == dtype and out.shape == q.shape
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), want, atol=tol, rtol=tol)


def test_decode_attention_kernel_ignores_what_lies_outside_each_rows_span():
    """Positions before a row's pad and after pos do not change its output (NaN there would show through)."""
    q = torch.randn(2, 2, 2, 16)
    keys, values = torch.randn(2, 2, 80, 16), torch.randn(2, 2, 80, 16)
    pad, pos = torch.tensor([3, 10]), torch.tensor([50])
    base = T.decode_attention(q, keys, values, pad, pos)
    keys[0, :, :3] = float("nan")
    values[1, :, :10] = float("nan")
    keys[:, :, 51:] = float("nan")
    values[:, :, 51:] = float("nan")
    torch.testing.assert_close(T.decode_attention(q, keys, values, pad, pos), base)


def test_decode_attention_kernel_reads_each_row_up_to_its_own_position(monkeypatch):
    """Continuous batching: every row of a step at its own position (pos [b]), one of them in another slice."""
    monkeypatch.setattr(T, "MIN_PROGRAMS", 64)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(3, 2, 2, 16, generator=g)
    keys, values = torch.randn(3, 2, 150, 16, generator=g), torch.randn(3, 2, 150, 16, generator=g)
    pad, pos = torch.tensor([0, 4, 70]), torch.tensor([20, 149, 90])
    out = T.decode_attention(q, keys, values, pad, pos)
    torch.testing.assert_close(out, _reference(q, keys, values, pad, pos), atol=1e-5, rtol=1e-5)
    for row in range(3):  # the same as the row alone
        alone = T.decode_attention(q[row:row + 1], keys[row:row + 1], values[row:row + 1], pad[row:row + 1],
                                   pos[row:row + 1])
        torch.testing.assert_close(out[row:row + 1], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("groups,per_group,dim,dtype", [(2, 4, 16, torch.float32), (4, 1, 32, torch.float32),
                                                        (2, 2, 8, torch.float32), (4, 1, 32, torch.float16),
                                                        (2, 4, 16, torch.float16)])
def test_decode_attention_kernel_over_an_fp8_cache_equals_the_softmax_over_its_dequantized_values(
        groups, per_group, dim, dtype, monkeypatch):
    """uint8 e4m3 codes with per-position scales (kv_fp8.py), as strided views of a longer cache: the kernel's
    output equals the masked softmax over codes * scales (and differs from one that ignores the scales). Half
    precision queries take the kernel's fp16 path (the GPU's, for bf16 models), whose value weights are rescaled
    per block."""
    from workflow_scripts.inference import kv_fp8

    monkeypatch.setattr(T, "MIN_PROGRAMS", 64)
    g = torch.Generator().manual_seed(dim)
    rows, cache = 3, 150
    codes, scales = [], []
    for _ in range(2):  # keys, then values: magnitudes that differ by position, so the scales matter
        x = torch.randn(rows, groups, cache + 5, dim, generator=g) * torch.rand(rows, groups, cache + 5, 1, generator=g) * 8
        c, s = kv_fp8.quantize(x)
        codes.append(c[:, :, :cache])
        scales.append(s[:, :, :cache])
    q = torch.randn(rows, groups, per_group, dim, generator=g).to(dtype)
    pad, pos = torch.tensor([0, 66, 9]), torch.tensor([140, 149, 100])
    out = T.decode_attention(q, codes[0], codes[1], pad, pos, scales[0], scales[1])
    keys, values = (kv_fp8.dequantize(c, s, torch.float32) for c, s in zip(codes, scales))
    want = torch.stack([_reference(q[r:r + 1], keys[r:r + 1], values[r:r + 1], pad[r:r + 1], int(pos[r]))[0]
                        for r in range(rows)])
    tol = 5e-5 if dtype == torch.float32 else 2e-3  # fp32: the per-block rescaling of the value weights rounds
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), want, atol=tol, rtol=tol)
    unscaled = T.decode_attention(q, codes[0], codes[1], pad, pos, torch.ones_like(scales[0]),
                                  torch.ones_like(scales[1]))
    assert (unscaled.float() - want).abs().max() > 1e-2
