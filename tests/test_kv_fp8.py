"""The fp8 KV cache's quantization (workflow_scripts/inference/kv_fp8.py): one e4m3 code per number and one scale
per vector."""
import torch

from workflow_scripts.inference import kv_fp8


def test_quantize_round_trip_error_is_within_half_an_e4m3_step_of_each_vectors_largest_magnitude():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, 128, generator=g) * torch.logspace(-4, 3, 64)[:, None, None]
    x[3, 2, 7] = 5e4  # one outlier sets only its own vector's scale
    x[5, 1] = 0.0
    codes, scale = kv_fp8.quantize(x.to(torch.bfloat16))
    assert codes.dtype == torch.uint8 and codes.shape == x.shape and scale.shape == x.shape[:-1]
    back = kv_fp8.dequantize(codes, scale, torch.float32)
    source = x.to(torch.bfloat16).float()
    amax = source.abs().amax(-1, keepdim=True)
    assert torch.isfinite(back).all()
    assert ((back - source).abs() <= amax / 28 * 1.0001).all()  # top binade of e4m3: step 32 at 448
    assert (back[5, 1] == 0).all() and (scale[5, 1] == 0)
    assert back.abs().amax(-1).sub(amax[..., 0]).abs().max() <= amax.max() * 1e-6  # each vector's extreme is exact


def test_bytes_per_vector_counts_the_codes_and_the_scale():
    codes, scale = kv_fp8.quantize(torch.randn(1, 128))
    assert kv_fp8.bytes_per_vector(128) == codes.numel() * codes.element_size() + scale.element_size()


def test_store_kernel_writes_the_codes_and_scales_the_torch_form_writes(monkeypatch):
    """kv_fp8.store's Triton kernel (the GPU's path; here under the interpreter) against its torch form: vectors of
    a strided view, scattered to permuted flat positions of a larger cache, an all-zero vector among them."""
    import pytest

    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(1)
    source = torch.randn(5, 3, 40, generator=g) * torch.rand(5, 3, 1, generator=g) * 20
    source[2, 1] = 0.0
    source[4, 0, 4:12] = torch.tensor([119.0, 121.0, 124.0, 0.0001, -0.0002, 3.9, 4.1, -448.0])  # carries, tiny
    x = source[..., 4:36]  # head dim 32 of a wider row: strided vectors
    index = torch.randperm(60, generator=g)[:15].view(5, 3)
    written = {}
    for kind in ("torch", "triton"):
        monkeypatch.setattr(kv_fp8, "STORE", kind)
        codes = torch.full((4, 15, 32), 7, dtype=torch.uint8)
        scales = torch.full((4, 15), -1.0)
        kv_fp8.store(x, index, codes, scales)
        written[kind] = (codes, scales)
    values = [kv_fp8.dequantize(*written[kind], torch.float32) for kind in ("triton", "torch")]
    assert torch.equal(*values)  # as numbers: the interpreter casts -0.0 to +0's code, the GPU keeps the sign
    torch.testing.assert_close(written["triton"][1], written["torch"][1], rtol=1e-6, atol=0)
    untouched = torch.ones(60, dtype=torch.bool)
    untouched[index.flatten()] = False
    assert (written["triton"][0].view(60, 32)[untouched] == 7).all()
    assert (written["triton"][1].view(60)[untouched] == -1).all()
