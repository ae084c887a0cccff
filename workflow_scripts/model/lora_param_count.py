"""Analytic count of LoRA's trainable parameters for a Llama shape, without building the model.

A LoRA adapter on a linear in->out with rank r adds A [r, in] and B [out, r]: r * (in + out) parameters.
megatron-core names: linear_qkv (hidden -> (heads + 2 * groups) * head_dim), linear_proj (heads * head_dim -> hidden),
linear_fc1 (hidden -> 2 * ffn, gate and up fused), linear_fc2 (ffn -> hidden).
"""
from __future__ import annotations

from typing import Iterable

TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


def linear_shapes(hidden: int, heads: int, groups: int, ffn: int, head_dim: int | None = None) -> dict[str, tuple[int, int]]:
    head_dim = head_dim or hidden // heads
    return {
        "linear_qkv": (hidden, (heads + 2 * groups) * head_dim),
        "linear_proj": (heads * head_dim, hidden),
        "linear_fc1": (hidden, 2 * ffn),
        "linear_fc2": (ffn, hidden),
    }


def lora_trainable_params(layers: int, hidden: int, heads: int, groups: int, ffn: int, rank: int,
                          targets: Iterable[str], head_dim: int | None = None) -> int:
    shapes = linear_shapes(hidden, heads, groups, ffn, head_dim)
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose among {TARGETS}")
    return layers * sum(rank * sum(shapes[t]) for t in targets)
