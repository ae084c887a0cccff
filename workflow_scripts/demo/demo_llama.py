"""A tiny random Hugging Face Llama checkpoint (config.json + safetensors) from a seed, without `transformers`.

Used by the demo DAG (rule demo_llama) and the tests in place of a downloaded model. Weights are drawn from one
torch generator in a fixed order, so the same arguments give the same bytes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file

from workflow_scripts.convert import mcore_layout as L
from workflow_scripts.core.cli import run_main
from workflow_scripts.convert.conversion import atomic_directory
from workflow_scripts.convert.hf_checkpoint import SINGLE, write_sharded
from workflow_scripts.model.llama_model import LlamaConfig, RopeScaling, hf_config_dict


INIT_STD = 0.1  # std of the random weights (the norms are drawn near 1)


def random_weights(cfg: LlamaConfig, seed: int, init_std: float = INIT_STD, fused_qkv: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of an HF LlamaForCausalLM of this shape; norms near 1 so a swapped norm changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    shapes = L.hf_shapes(cfg)

    def draw(shape: tuple[int, ...], norm: bool = False) -> torch.Tensor:
        values = torch.randn(shape, generator=gen)
        return (1.0 + 0.1 * values if norm else init_std * values).to(cfg.dtype)

    out = {L.HF_EMBEDDING: draw(shapes[L.HF_EMBEDDING])}
    attn = [L.HF_QKV_FUSED] if fused_qkv else [L.HF_Q, L.HF_K, L.HF_V]
    for layer in range(cfg.num_layers):
        for name in (L.HF_IN_NORM, *attn, L.HF_O, L.HF_POST_NORM, L.HF_GATE, L.HF_UP, L.HF_DOWN):
            out[L.hf_layer(layer, name)] = draw(shapes[name], norm=name.endswith("layernorm.weight"))
    out[L.HF_FINAL_NORM] = draw(shapes[L.HF_FINAL_NORM], norm=True)
    out[L.HF_OUTPUT] = draw(shapes[L.HF_OUTPUT])
    return out


def write_llama(out_dir: Path | str, cfg: LlamaConfig, seed: int = 1234, shards: int = 1, fused_qkv: bool = False,
                init_std: float = INIT_STD) -> Path:
    """Write config.json + model.safetensors (shards == 1) or `shards` files with an index."""
    weights = random_weights(cfg, seed, init_std, fused_qkv)
    with atomic_directory(out_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2) + "\n")
        if shards == 1:
            save_file(weights, str(tmp / SINGLE), metadata={"format": "pt"})
        else:
            names = list(weights)
            per = -(-len(names) // shards)
            groups = [names[i:i + per] for i in range(0, len(names), per)]
            write_sharded(tmp, (
                (f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors", {n: weights[n] for n in group})
                for i, group in enumerate(groups)))
    return Path(out_dir)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.demo.demo_llama", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--vocab-size", type=int, default=1000)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--intermediate-size", type=int, default=160)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--num-heads", type=int, default=8)
    p.add_argument("--num-kv-heads", type=int, default=2)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rope-scaling-factor", type=float, default=0.0, help="> 0: Llama 3 RoPE scaling with this factor")
    p.add_argument("--max-position-embeddings", type=int, default=256)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--fused-qkv", action="store_true", help="MLPerf 70B layout: one qkv_proj per layer")
    p.add_argument("--seed", type=int, default=1234)
    return p


def config_from_args(args: argparse.Namespace) -> LlamaConfig:
    scaling = None
    if args.rope_scaling_factor > 0:
        scaling = RopeScaling(factor=args.rope_scaling_factor, original_max_position_embeddings=args.max_position_embeddings // 2)
    return LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_layers=args.num_layers, num_attention_heads=args.num_heads, num_query_groups=args.num_kv_heads,
        head_dim=args.hidden_size // args.num_heads, rope_theta=args.rope_theta, rope_scaling=scaling,
        max_position_embeddings=args.max_position_embeddings, torch_dtype=args.dtype)


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    write_llama(args.out, cfg, args.seed, args.shards, args.fused_qkv)
    print(json.dumps(dataclasses.asdict(cfg)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
