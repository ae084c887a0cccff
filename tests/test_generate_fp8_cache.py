"""The fast engine over an fp8 KV cache (generate.py --kv-cache fp8; kv_fp8.py): the prefill stores codes whose
values are the model-dtype cache's within e4m3's rounding, decode steps over it stay close to the model-dtype cache's
logits, every decode-attention path reads it alike, and the entry point records which cache it ran."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from workflow_scripts.convert.conversion import hf_to_mcore
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.inference import continuous_batching as C
from workflow_scripts.inference import decode_engine as D
from workflow_scripts.inference import generate as G
from workflow_scripts.inference import kv_fp8
from workflow_scripts.model.llama_model import LlamaConfig, shutdown_parallel

CFG = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_layers=2, head_dim=16,
                  num_attention_heads=4, num_query_groups=2, max_position_embeddings=128)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mcore_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("fp8_model")
    return hf_to_mcore(write_llama(base / "hf", CFG, seed=5, init_std=0.3), base / "mcore", tp=1, pp=1, spec="local")


@pytest.fixture(scope="module")
def model(mcore_dir):
    model, _ = G.load_model(mcore_dir)
    yield model
    shutdown_parallel()


def _prompts(count: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 300, (int(n),), generator=gen).tolist() for n in torch.randint(2, 30, (count,), generator=gen)]


def _teacher_forced(model, prompts, fp8: bool, steps: int) -> torch.Tensor:
    """Logits [steps + 1, b, v] of the prefill and of `steps` decode steps fed token 7 + step."""
    tokens, pad = D.left_pad(prompts, CPU)
    positions = tokens.shape[1] + steps + 1
    cache = D.KVCache(model, len(prompts), positions, torch.float32, CPU, fp8=fp8)
    rope = D.RopeTable(model, positions, torch.float32)
    out = [D.prefill(model, tokens, pad, cache, rope)]
    for step in range(steps):
        token = torch.full((len(prompts),), 7 + step)
        pos = torch.full((len(prompts),), tokens.shape[1] + step)
        out.append(D.decode_step(model, token, pos, pad, cache, rope, positions))
    return torch.stack(out), cache


def test_fp8_prefill_stores_the_model_dtype_cache_within_e4m3_rounding(model):
    prompts = _prompts(4, 1)
    exact, full = _teacher_forced(model, prompts, fp8=False, steps=0)
    rounded, fp8 = _teacher_forced(model, prompts, fp8=True, steps=0)
    torch.testing.assert_close(rounded, exact)  # the prompt attends to its own keys, before any rounding
    for i in range(CFG.num_layers):
        for (codes, scales), want in zip(((fp8.keys[i], fp8.key_scales[i]), (fp8.values[i], fp8.value_scales[i])),
                                         (full.keys[i], full.values[i])):
            assert codes.dtype == torch.uint8
            back = kv_fp8.dequantize(codes, scales, torch.float32)
            assert ((back - want).abs() <= want.abs().amax(-1, keepdim=True) / 28 * 1.0001).all()


def _rounded(write):
    """A KVCache write that stores keys and values rounded through fp8 and back, in the model's dtype."""
    def wrapped(self, i, key, value, *rest):
        key, value = (kv_fp8.dequantize(*kv_fp8.quantize(t), t.dtype) for t in (key, value))
        return write(self, i, key, value, *rest)
    return wrapped


def test_fp8_decode_steps_equal_the_model_dtype_cache_holding_the_rounded_values(model, monkeypatch):
    """The oracle: a model-dtype cache whose writes are rounded through fp8 gives the fp8 cache's logits, for every
    decode-attention path (the matmul and sdpa paths dequantize, the Triton kernel reads the codes); and they differ
    from the unrounded cache's, so the rounding is really there."""
    prompts = _prompts(5, 2)
    exact, _ = _teacher_forced(model, prompts, fp8=False, steps=6)
    for attention in ("matmul", "sdpa", "triton"):
        monkeypatch.setattr(D, "DECODE_ATTENTION", attention)
        if attention == "triton":
            pytest.importorskip("triton")
            from triton_interpreter import patch_scalar_index

            patch_scalar_index(monkeypatch)
        got, _ = _teacher_forced(model, prompts, fp8=True, steps=6)
        with monkeypatch.context() as patched:
            for name in ("write_prompt", "write_step"):
                patched.setattr(D.KVCache, name, _rounded(getattr(D.KVCache, name)))
            want, _ = _teacher_forced(model, prompts, fp8=False, steps=6)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)  # fp32 sums in another order
        assert (got[1:] - exact[1:]).abs().max() > 1e-2


def test_fp8_generation_runs_every_sample_through_refills_and_compaction(model, monkeypatch):
    """The fast engine with an fp8 cache (matmul decode attention, which dequantizes) through continuous batching:
    its refills write codes and scales into freed rows, and compaction keeps both; the tokens equal those of the
    Triton kernels (decode attention reading the codes itself, and the quantizing store) for every sample."""
    prompts = _prompts(14, 3)
    monkeypatch.setattr(D, "KV_CACHE", "fp8")
    monkeypatch.setattr(C, "CHECK_EVERY", 2)
    kept = []
    keep = D.KVCache.keep
    monkeypatch.setattr(D.KVCache, "keep", lambda self, rows: (kept.append(len(self.key_scales)), keep(self, rows)))
    free = G.generate_all(model, CFG.vocab_size, prompts, 10, eos_id=0, batch_size=14, engine="fast")
    eos = free[0][2]
    outputs = {}
    for attention in ("matmul", "triton"):
        monkeypatch.setattr(D, "DECODE_ATTENTION", attention)
        if attention == "triton":
            pytest.importorskip("triton")
            from triton_interpreter import patch_scalar_index

            patch_scalar_index(monkeypatch)
            monkeypatch.setattr(kv_fp8, "STORE", "triton")
        outputs[attention] = G.generate_all(model, CFG.vocab_size, prompts, 10, eos, 1, 4, engine="fast")
    assert outputs["matmul"] == outputs["triton"]
    assert 0 < sum(len(o) < 10 for o in outputs["matmul"]) < len(prompts)
    assert kept and all(n == CFG.num_layers for n in kept)


def test_fp8_cache_bytes_and_the_auto_batch_estimate(model):
    from workflow_scripts.inference.batch_size import kv_bytes_per_row

    cache = D.KVCache(model, 3, 100, torch.float32, CPU, fp8=True)
    allocated = sum(t.numel() * t.element_size()
                    for t in cache.keys + cache.values + cache.key_scales + cache.value_scales)
    assert kv_bytes_per_row(model, 100, fp8=True) * 3 == allocated
    assert kv_bytes_per_row(model, 100, fp8=True) * 3 < kv_bytes_per_row(model, 100)  # fp32, head dim 16: 20 of 64 bytes


def _args(mcore_dir, tokenizer, tmp_path, *extra: str) -> list[str]:
    samples = tmp_path / "samples.pkl"
    pd.DataFrame({"tok_input": _prompts(3, 4), "output": ["a", "b", "c"]}).to_pickle(samples)
    return ["--mcore", str(mcore_dir), "--samples", str(samples), "--tokenizer", str(tokenizer), "--eos-token",
            "</s>", "--out", str(tmp_path / "acc.json"), "--summary", str(tmp_path / "summary.txt"), "--detail",
            str(tmp_path / "detail.txt"), "--stats", str(tmp_path / "stats.json"), "--max-new-tokens", "4",
            "--min-new-tokens", "1", "--batch-size", "2", "--limit", "0", "--tp", "1", "--threads", "0", *extra]


def test_main_records_the_fp8_cache_and_refuses_it_for_the_static_engine(mcore_dir, demo_tokenizer_path, tmp_path,
                                                                         model, monkeypatch):
    monkeypatch.setattr(D, "KV_CACHE", D.KV_CACHE)  # main sets it from --kv-cache: restored after the test
    assert G.main(_args(mcore_dir, demo_tokenizer_path, tmp_path, "--kv-cache", "fp8")) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["kv_cache"] == "fp8" and stats["generated_tokens"] == 12
    (tmp_path / "stats.json").unlink()
    with pytest.raises(PipelineInputError, match="--kv-cache fp8 needs --engine fast"):
        G.generate_files(G.parser().parse_args(_args(mcore_dir, demo_tokenizer_path, tmp_path, "--kv-cache", "fp8",
                                                     "--engine", "static")))
    assert not (tmp_path / "stats.json").exists()

