"""Activation recompute chosen from the memory estimate (workflow_scripts/train/train_memory.py)."""
from __future__ import annotations

import pytest

from workflow_scripts.train import train_memory
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.model.llama_model import LlamaConfig
from workflow_scripts.train.train_config import LLAMA2_7B_SHAPE, build_config

GIB = 1024**3
H100, H200 = 79.6 * GIB, 139.8 * GIB  # what torch reports as total_memory
LLAMA2_70B = LlamaConfig(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_layers=80,
                         num_attention_heads=64, num_query_groups=8, head_dim=128, max_position_embeddings=8192)


def _layout(recipe: str, model: LlamaConfig, dp: int = 1, **overrides):
    cfg = build_config(recipe, {"checkpoint": "unused", **overrides} if "lora" in recipe else overrides)  # not read
    return train_memory.layout_for(cfg, model.with_padding(cfg.tensor_parallel), dp)


def test_7b_lora_estimate_matches_a_hand_count():
    layout = _layout("llama2_7b_lora_1xh100_bf16", LlamaConfig(**LLAMA2_7B_SHAPE))
    assert layout.params == 6_738_415_616  # Llama-2-7B
    assert layout.trainable_params == 32 * 16 * ((4096 + 3 * 4096) + (4096 + 4096))  # r 16 on qkv and proj
    est = train_memory.estimate(layout)
    # per token and layer: replicated 3h, split 2h + 2kv + 2 ffn (bf16), LoRA inputs 2h x (2 + 1 mask byte)
    per_token = (3 * 4096 + 2 * 4096 + 2 * 4096 + 2 * 11008) * 2 + 2 * 4096 * 3
    assert est["activations_none"] == pytest.approx(per_token * 8192 * 32)
    assert est["weights"] == pytest.approx(layout.params * 2)
    assert est["none"] / GIB == pytest.approx(45.9, abs=0.1)  # measured peak on an H200: 47.6 GiB (docs/performance.md)
    assert est["full"] < est["none"] / 2


def test_auto_picks_no_recompute_where_it_fits_and_full_for_70b_on_8xh100():
    seven_b = _layout("llama2_7b_lora_1xh100_bf16", LlamaConfig(**LLAMA2_7B_SHAPE))
    assert train_memory.choose(seven_b, H100)[0] == "none"
    assert train_memory.choose(seven_b, H200)[0] == "none"
    fp8 = _layout("llama2_7b_lora_1xh100_bf16", LlamaConfig(**LLAMA2_7B_SHAPE), precision="fp8")
    assert train_memory.estimate(fp8)["none"] - train_memory.estimate(seven_b)["none"] == pytest.approx(
        2 * fp8.params)  # TE's fp8 weight copies and transposes
    # 70B at TP 4 in bf16 (DP 2 on 8 GPUs): with the recipe's sequence parallelism the activations split over TP and
    # no recompute fits an 80 GB H100 (71 GiB); without it only full recompute does
    seventy_b = _layout("llama2_70b_lora_8xh100_fp8", LLAMA2_70B, dp=2, precision="bf16")
    assert seventy_b.sp
    mode, est = train_memory.choose(seventy_b, H100)
    assert mode == "none" and est["none"] < 0.9 * H100
    no_sp = _layout("llama2_70b_lora_8xh100_fp8", LLAMA2_70B, dp=2, precision="bf16", sequence_parallel=False)
    mode, est_no_sp = train_memory.choose(no_sp, H100)
    assert mode == "full" and est_no_sp["none"] > H100 and est_no_sp["full"] < 0.9 * H100
    assert est_no_sp["activations_none"] == pytest.approx(est["activations_none"] * 2.18, rel=0.01)
    # in fp8 the bf16 weights and TE's fp8 copies (69 GB per GPU) leave room for full recompute only (NVIDIA's config
    # keeps fp8 weights only, which this trainer does not)
    fp8_70b = _layout("llama2_70b_lora_8xh100_fp8", LLAMA2_70B, dp=2)
    mode, est = train_memory.choose(fp8_70b, H100)
    assert mode == "full" and est["none"] > H100 and est["full"] < 0.9 * H100 and est["weights"] > 64 * GIB


def test_selective_drops_the_local_specs_attention_scores_only():
    local = _layout("demo_pretrain_cpu", LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=352,
                                                     num_layers=2, num_attention_heads=4, num_query_groups=2,
                                                     head_dim=32, max_position_embeddings=256))
    est = train_memory.estimate(local)
    assert est["none"] - est["selective"] == pytest.approx(2 * 4 * 256 * 256 * 4 * 4)  # layers x heads x s^2 x mbs x 4B
    te = _layout("llama2_7b_lora_1xh100_bf16", LlamaConfig(**LLAMA2_7B_SHAPE))
    assert train_memory.estimate(te)["selective"] == train_memory.estimate(te)["none"]  # flash attention


def test_recompute_setting_accepts_the_old_booleans_and_refuses_others():
    assert build_config("demo_lora_cpu", {"checkpoint": "x", "recompute_activations": True}).recompute_activations == "full"
    assert build_config("demo_lora_cpu", {"checkpoint": "x", "recompute_activations": False}).recompute_activations == "none"
    assert build_config("demo_lora_cpu", {"checkpoint": "x"}).recompute_activations == "auto"
    with pytest.raises(PipelineInputError, match="recompute_activations"):
        build_config("demo_lora_cpu", {"checkpoint": "x", "recompute_activations": "some"})
