"""Tiny random HF Llama checkpoints of several shapes, shared by the conversion tests."""
from __future__ import annotations

from pathlib import Path

from workflow_scripts.convert.conversion import hf_to_mcore
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.model.llama_model import LlamaConfig, RopeScaling

_BASE = dict(hidden_size=64, intermediate_size=160, num_layers=2, head_dim=8, max_position_embeddings=256)

# name -> (config, write options)
SHAPES = {
    "mha": (LlamaConfig(vocab_size=1000, num_attention_heads=8, num_query_groups=8, **_BASE), {}),
    "gqa": (LlamaConfig(vocab_size=1000, num_attention_heads=8, num_query_groups=2, **_BASE), {"shards": 3}),
    "llama3_rope": (LlamaConfig(vocab_size=1000, num_attention_heads=8, num_query_groups=2, rope_theta=500000.0,
                                rope_scaling=RopeScaling(factor=8.0, original_max_position_embeddings=64),
                                torch_dtype="bfloat16", **_BASE), {}),
    "odd_vocab": (LlamaConfig(vocab_size=997, num_attention_heads=8, num_query_groups=2, torch_dtype="float16", **_BASE), {}),
    "fused_qkv": (LlamaConfig(vocab_size=1000, num_attention_heads=8, num_query_groups=2, **_BASE), {"fused_qkv": True}),
}


def make_models(base: Path, tp: int = 1) -> dict[str, tuple[Path, Path]]:
    """name -> (HF folder, converted megatron folder at `tp`)."""
    out = {}
    for i, (name, (cfg, opts)) in enumerate(SHAPES.items()):
        hf = write_llama(base / f"{name}_hf", cfg, seed=100 + i, **opts)
        out[name] = (hf, hf_to_mcore(hf, base / f"{name}_mcore_tp{tp}", tp=tp, pp=1, spec="local"))
    return out
