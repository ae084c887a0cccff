"""Greedy generation with megatron-core's KV cache == greedy re-forward without cache, token for token."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from workflow_scripts.inference import generate as G
from workflow_scripts.inference.accuracy_log import read_accuracy_log
from workflow_scripts.convert.conversion import hf_to_mcore
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.model.llama_model import LlamaConfig, shutdown_parallel

CFG = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_layers=2, head_dim=8,
                  num_attention_heads=8, num_query_groups=2, max_position_embeddings=128)


@pytest.fixture(scope="module")
def mcore_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen_model")
    hf = write_llama(base / "hf", CFG, seed=11, init_std=0.3)
    return hf_to_mcore(hf, base / "mcore", tp=1, pp=1, spec="local")


@pytest.fixture(scope="module")
def model(mcore_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: extra threads only spin on a shared machine
    model, cfg = G.load_model(mcore_dir)
    yield model, cfg
    shutdown_parallel()
    torch.set_num_threads(threads)


def _prompts():
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(5, 300, (n,), generator=gen).tolist() for n in (7, 12, 3, 9, 12)]


def test_cached_batch_equals_uncached_greedy(model):
    model, cfg = model
    prompts = _prompts()
    free = [G.generate_uncached(model, cfg.vocab_size, p, 10, eos_id=0) for p in prompts]
    assert all(len(o) == 10 for o in free) and len({tuple(o) for o in free}) > 1
    # An EOS that sample 0 emits at its 3rd step: it stops there while the batch (and its cache) carries on.
    eos = free[0][2]
    expected = [G.generate_uncached(model, cfg.vocab_size, p, 10, eos_id=eos) for p in prompts]
    assert expected[0] == free[0][:3] and any(len(e) == 10 for e in expected)
    assert G.generate_batch(model, cfg.vocab_size, prompts, 10, eos_id=eos) == expected
    assert G.generate_all(model, cfg.vocab_size, prompts, 10, eos_id=eos, batch_size=2) == expected


def test_min_new_tokens_suppresses_eos_at_first_step(model):
    model, cfg = model
    prompt = _prompts()[1]
    first = G.generate_uncached(model, cfg.vocab_size, prompt, 4, eos_id=0)[0]
    out = G.generate_batch(model, cfg.vocab_size, [prompt], 4, eos_id=first, min_new_tokens=1)
    assert out[0][0] != first and len(out[0]) >= 1
    assert G.generate_batch(model, cfg.vocab_size, [prompt], 4, eos_id=first, min_new_tokens=0) == [[first]]


def test_length_batches_cover_every_row_once():
    prompts = [[1] * n for n in (3, 9, 1, 9, 5)]
    batches = G.length_batches(prompts, 2)
    assert sorted(r for b in batches for r in b) == list(range(5))
    assert batches[0] == [1, 3]


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_main_writes_accuracy_log(mcore_dir, demo_tokenizer_path, tmp_path, model, batching, monkeypatch):
    import json

    from tokenizers import Tokenizer

    monkeypatch.setattr(G, "BATCHING", G.BATCHING)  # main sets it from --batching: restored after the test

    samples = tmp_path / "samples.pkl"
    pd.DataFrame({"tok_input": _prompts()[:3], "output": ["a", "b", "c"]}).to_pickle(samples)
    out, stats = tmp_path / "acc.json", tmp_path / "stats.json"
    args = ["--mcore", str(mcore_dir), "--samples", str(samples), "--tokenizer", str(demo_tokenizer_path),
            "--eos-token", "</s>", "--out", str(out), "--summary", str(tmp_path / "summary.txt"), "--detail",
            str(tmp_path / "detail.txt"), "--stats", str(stats), "--max-new-tokens", "5",
            "--min-new-tokens", "1", "--batch-size", "2", "--limit", "0", "--tp", "1", "--threads", "0",
            "--batching", batching]
    assert G.main(args) == 0
    assert json.loads(stats.read_text())["batching"] == batching == G.BATCHING
    eos = Tokenizer.from_file(str(demo_tokenizer_path)).token_to_id("</s>")
    logged = read_accuracy_log(out)
    m, cfg = G.load_model(mcore_dir)
    assert logged == {i: G.generate_uncached(m, cfg.vocab_size, p, 5, eos) for i, p in enumerate(_prompts()[:3])}


def test_bad_sample_list(tmp_path):
    with pytest.raises(PipelineInputError, match="nope.pkl: sample list missing"):
        G.read_prompts(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.pkl"
    pd.DataFrame({"tok_input": [[1], []]}).to_pickle(bad)
    with pytest.raises(PipelineInputError, match="bad.pkl: row 1: empty tok_input"):
        G.read_prompts(bad)


def test_fast_engine_equals_static_path_for_every_sample(model, monkeypatch):
    """decode_engine.py (left padding, one-pass prefill, fixed-shape cache, GQA rows, dropping finished rows) gives
    the reference path's greedy tokens for every sample, with EOS stopping rows mid-batch and min_new_tokens > 1."""
    from workflow_scripts.inference import continuous_batching as C
    from workflow_scripts.inference import decode_engine as D

    model, cfg = model
    gen = torch.Generator().manual_seed(8)
    prompts = [torch.randint(5, 300, (int(n),), generator=gen).tolist() for n in torch.randint(1, 40, (24,), generator=gen)]
    free = G.generate_all(model, cfg.vocab_size, prompts, 12, eos_id=0, batch_size=24, engine="static")
    # Row 0's third token as EOS, and 20 copies of row 0: batches where most rows stop at once (and are dropped).
    eos = free[0][2]
    prompts += [prompts[0]] * 20
    dropped = []
    keep = D.KVCache.keep
    monkeypatch.setattr(D.KVCache, "keep", lambda self, rows: (dropped.append(len(rows)), keep(self, rows)))
    monkeypatch.setattr(C, "CHECK_EVERY", 3)
    monkeypatch.setattr(D, "KV_BLOCK", 4)  # steps attend to several cache lengths within a short run
    for batch, min_new, attention, rope in ((24, 1, "matmul", "torch"), (5, 2, "matmul", "torch"),
                                            (5, 2, "sdpa", "torch"), (5, 2, "triton", "triton")):
        monkeypatch.setattr(D, "DECODE_ATTENTION", attention)
        monkeypatch.setattr(D, "ROPE", rope)
        if attention == "triton":  # the kernels on CPU under Triton's interpreter, one step shape for the batch
            pytest.importorskip("triton")
            from triton_interpreter import patch_scalar_index

            patch_scalar_index(monkeypatch)
        expected = G.generate_all(model, cfg.vocab_size, prompts, 12, eos, min_new, batch, engine="static")
        assert 20 < sum(len(o) < 12 for o in expected) < len(prompts)
        assert all(len(o) >= min_new for o in expected)
        fast = [G.generate_rows(model, cfg.vocab_size, prompts, [[r]], 12, eos, min_new)[r] for r in range(3)]
        assert fast == expected[:3]
        assert G.generate_all(model, cfg.vocab_size, prompts, 12, eos, min_new, batch, engine="fast") == expected
    assert dropped, "no batch dropped its finished rows: the compaction path went untested"


def test_continuous_batching_refills_finished_slots_and_takes_fewer_steps(model, monkeypatch):
    """generate_stream: slots freed by early EOS are refilled by later prompts while the other slots keep decoding
    (at steps > 0, with rows at different positions), each sample's tokens equal the static path's, and the run
    takes fewer decode steps than static batches of the same size, which each run to their longest output."""
    from workflow_scripts.inference import continuous_batching as C
    from workflow_scripts.inference import decode_engine as D

    model, cfg = model
    gen = torch.Generator().manual_seed(21)
    prompts = [torch.randint(5, 300, (int(n),), generator=gen).tolist() for n in torch.randint(2, 30, (18,), generator=gen)]
    free = G.generate_all(model, cfg.vocab_size, prompts, 16, eos_id=0, batch_size=18, engine="static")
    eos = free[0][3]  # some rows end early, at different steps
    expected = G.generate_all(model, cfg.vocab_size, prompts, 16, eos, 1, 4, engine="static")
    lengths = [len(o) for o in expected]
    assert min(lengths) < 16 and max(lengths) == 16
    refills, steps = [], []
    refill, call = C._refill, D.Decoder.__call__
    monkeypatch.setattr(C, "_refill", lambda *a: (refills.append((a[7], len(a[3]))), refill(*a)))
    monkeypatch.setattr(D.Decoder, "__call__", lambda self, *a: (steps.append(a[2]), call(self, *a))[1])
    monkeypatch.setattr(C, "CHECK_EVERY", 2)
    order = [row for rows in G.length_batches(prompts, 4) for row in rows]
    streamed = dict(C.generate_stream(model, cfg.vocab_size, [prompts[r] for r in order], 4, 16, eos))
    assert {order[i]: ids for i, ids in streamed.items()} == dict(enumerate(expected))
    assert refills[0] == (0, 4) and len(refills) > 2 and any(step > 0 for step, _ in refills[1:])
    static_steps = sum(max(lengths[r] for r in rows) - 1 for rows in G.length_batches(prompts, 4))
    assert len(steps) < static_steps


def test_prefill_into_any_cache_rows_equals_prefill_of_a_fresh_cache(model):
    """A refill's prefill writes its prompts into the given cache rows (an index tensor, or a slice of consecutive
    rows) exactly as a prefill of its own cache does, and leaves the other rows alone."""
    from workflow_scripts.inference import decode_engine as D

    model, cfg = model
    prompts = _prompts()[:2]
    tokens, pad = D.left_pad(prompts, torch.device("cpu"))
    rope = D.RopeTable(model, 32, torch.float32)
    fresh = D.KVCache(model, 2, 32, torch.float32, torch.device("cpu"))
    want = D.prefill(model, tokens, pad, fresh, rope)
    for rows, placed in ((torch.tensor([3, 1]), [3, 1]), (slice(2, 4), [2, 3])):
        cache = D.KVCache(model, 4, 32, torch.float32, torch.device("cpu"))
        for tensor in cache.keys + cache.values:
            tensor.fill_(7.0)
        torch.testing.assert_close(D.prefill(model, tokens, pad, cache, rope, rows), want)
        for mine, theirs in zip(cache.keys + cache.values, fresh.keys + fresh.values):
            torch.testing.assert_close(mine[placed, :, :tokens.shape[1]], theirs[:, :, :tokens.shape[1]])
            untouched = [r for r in range(4) if r not in placed]
            assert (mine[untouched] == 7.0).all() and (mine[placed, :, tokens.shape[1]:] == 7.0).all()


def test_fast_engine_check_every_step_drops_rows_as_they_finish(model):
    from workflow_scripts.inference.continuous_batching import generate_batch_fast

    model, cfg = model
    prompts = _prompts()
    eos = G.generate_uncached(model, cfg.vocab_size, prompts[0], 10, eos_id=0)[2]
    expected = [G.generate_uncached(model, cfg.vocab_size, p, 10, eos_id=eos) for p in prompts]
    assert generate_batch_fast(model, cfg.vocab_size, prompts, 10, eos, check_every=1) == expected


def test_batch_size_auto_and_its_kv_cache_estimate(model):
    import argparse

    from workflow_scripts.inference.batch_size import AUTO, CPU_ROWS, kv_bytes_per_row, parse_batch_size, resolve_batch_size
    from workflow_scripts.inference.decode_engine import KVCache

    model, _ = model
    assert parse_batch_size("auto") == AUTO and parse_batch_size("12") == 12
    for bad in ("0", "-3", "eight"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer or 'auto'"):
            parse_batch_size(bad)
    assert resolve_batch_size(AUTO, model, 100) == CPU_ROWS and resolve_batch_size(5, model, 100) == 5
    cache = KVCache(model, 3, 100, torch.float32, torch.device("cpu"))
    allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert kv_bytes_per_row(model, 100) * 3 == allocated


def test_warm_up_runs_one_prefill_and_decode_steps_of_dummy_prompts(model, monkeypatch):
    """continuous_batching.warm_up (generate.py runs it on a GPU before LoadGen's query): two short prompts through
    the real engine, a prefill and a decode step, writing no output."""
    from workflow_scripts.inference import continuous_batching as C
    from workflow_scripts.inference import decode_engine as D

    model, cfg = model
    calls = []
    prefill, call = D.prefill, D.Decoder.__call__
    monkeypatch.setattr(D, "prefill", lambda *a, **k: (calls.append("prefill"), prefill(*a, **k))[1])
    monkeypatch.setattr(D.Decoder, "__call__", lambda self, *a: (calls.append(("decode", len(a[0]))), call(self, *a))[1])
    assert C.warm_up(model, cfg.vocab_size, eos_id=0) is None
    assert calls == ["prefill", ("decode", 2)]


def test_fast_engine_through_the_triton_swiglu_equals_the_mlp_modules_forward(model, monkeypatch):
    """SWIGLU "triton" (fc1, swiglu_triton's kernel under the interpreter, fc2) gives the module's own logits in a
    prefill and the decode steps after it; "auto" picks the kernel for this gated SiLU MLP wherever it can run."""
    pytest.importorskip("triton")
    from workflow_scripts.inference import decode_engine as D
    from workflow_scripts.inference import swiglu_triton

    model, cfg = model
    prompts = _prompts()
    mlp = model.decoder.layers[0].mlp
    assert D.swiglu_kind(torch.device("cpu"), mlp) == "module"
    monkeypatch.setattr(swiglu_triton, "available", lambda device: True)
    assert D.swiglu_kind(torch.device("cpu"), mlp) == "triton"
    calls = []
    kernel = swiglu_triton.swiglu
    monkeypatch.setattr(swiglu_triton, "swiglu", lambda x: (calls.append(x.shape[:-1]), kernel(x))[1])

    def run(kind: str) -> torch.Tensor:
        monkeypatch.setattr(D, "SWIGLU", kind)
        tokens, pad = D.left_pad(prompts, torch.device("cpu"))
        cache = D.KVCache(model, len(prompts), 32, torch.float32, torch.device("cpu"))
        rope = D.RopeTable(model, 32, torch.float32)
        out = [D.prefill(model, tokens, pad, cache, rope)]
        for step in range(3):
            pos = torch.full((len(prompts),), tokens.shape[1] + step)
            out.append(D.decode_step(model, torch.full((len(prompts),), 9 + step), pos, pad, cache, rope, 32))
        return torch.stack(out)

    want = run("module")
    assert not calls
    torch.testing.assert_close(run("triton"), want, atol=1e-5, rtol=1e-5)
    assert len(calls) == 4 * cfg.num_layers
