"""Where each HF Llama tensor lives in a megatron-core checkpoint, and the row permutations between the two.

megatron-core checkpoints (torch_dist) hold *global* tensors: one key per parameter kind with the layers stacked on a
leading axis (`decoder.layers.<...>` of shape [num_layers, ...]). The global layout does not depend on TP or PP:
linear_qkv rows are grouped per query group ([q heads of group g; k_g; v_g] for g = 0..G-1) so a TP rank's rows
are whole groups, linear_fc1 is [gate; up], embedding/output rows are padded to the padded vocabulary.
Both layer specs use these checkpoint keys (the local spec maps its norm names onto the TE ones). Checked on an
H100 (TE 2.11): the five test shapes load with the TE and the local spec and match HF to < 5e-6 (TF32 off).
"""
from __future__ import annotations

import torch

from workflow_scripts.model.llama_model import LlamaConfig

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
QKV = "decoder.layers.self_attention.linear_qkv.weight"
QKV_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
PROJ = "decoder.layers.self_attention.linear_proj.weight"
FC1 = "decoder.layers.mlp.linear_fc1.weight"
FC1_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
FC2 = "decoder.layers.mlp.linear_fc2.weight"
LAYER_KEYS = (QKV_NORM, QKV, PROJ, FC1_NORM, FC1, FC2)
GLOBAL_KEYS = (EMBEDDING, FINAL_NORM, OUTPUT)
# Modules whose `_extra_state` (fp8 metadata; empty for bf16/fp16/fp32 checkpoints) megatron loads as a ShardedObject:
# per layer the four linears (both specs), once the final norm (TE spec only). Writing all of them lets one
# checkpoint load with either spec (a key the model does not ask for is ignored, a missing one is an error).
EXTRA_STATE_MODULES = (
    "decoder.layers.self_attention.linear_qkv",
    "decoder.layers.self_attention.linear_proj",
    "decoder.layers.mlp.linear_fc1",
    "decoder.layers.mlp.linear_fc2",
)
GLOBAL_EXTRA_STATE_MODULES = ("decoder.final_layernorm",)

HF_EMBEDDING = "model.embed_tokens.weight"
HF_OUTPUT = "lm_head.weight"
HF_FINAL_NORM = "model.norm.weight"


def hf_layer(layer: int, name: str) -> str:
    return f"model.layers.{layer}.{name}"


# Per-layer HF tensor names (suffixes of model.layers.{l}.)
HF_Q, HF_K, HF_V = "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"
HF_QKV_FUSED = "self_attn.qkv_proj.weight"
HF_O = "self_attn.o_proj.weight"
HF_GATE, HF_UP, HF_DOWN = "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"
HF_IN_NORM, HF_POST_NORM = "input_layernorm.weight", "post_attention_layernorm.weight"


def hf_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Expected shape of every HF tensor kind (layer tensors by suffix), from config.json."""
    h, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_query_groups * hd
    return {
        HF_EMBEDDING: (cfg.vocab_size, h), HF_OUTPUT: (cfg.vocab_size, h), HF_FINAL_NORM: (h,),
        HF_Q: (q, h), HF_K: (kv, h), HF_V: (kv, h), HF_QKV_FUSED: (q + 2 * kv, h), HF_O: (h, q),
        HF_GATE: (cfg.intermediate_size, h), HF_UP: (cfg.intermediate_size, h), HF_DOWN: (h, cfg.intermediate_size),
        HF_IN_NORM: (h,), HF_POST_NORM: (h,),
    }


def mcore_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Global shapes in the megatron checkpoint (layer keys include the leading num_layers axis)."""
    h, L, ffn = cfg.hidden_size, cfg.num_layers, cfg.intermediate_size
    return {
        EMBEDDING: (cfg.padded_vocab_size, h), OUTPUT: (cfg.padded_vocab_size, h), FINAL_NORM: (h,),
        QKV_NORM: (L, h), QKV: (L, cfg.qkv_rows, h), PROJ: (L, h, cfg.num_attention_heads * cfg.head_dim),
        FC1_NORM: (L, h), FC1: (L, 2 * ffn, h), FC2: (L, h, ffn),
    }


def split_fused_qkv(cfg: LlamaConfig, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLPerf 70B `qkv_proj` rows are [Q (all heads) | K (all groups) | V (all groups)]."""
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_query_groups * cfg.head_dim
    return fused[:q], fused[q:q + kv], fused[q + kv:]


def interleave_qkv(cfg: LlamaConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HF q/k/v -> megatron linear_qkv: per query group, its heads_per_group q heads, then its k head, its v head."""
    g, hd, h = cfg.num_query_groups, cfg.head_dim, q.shape[-1]
    grouped = torch.cat([q.reshape(g, cfg.heads_per_group * hd, h), k.reshape(g, hd, h), v.reshape(g, hd, h)], dim=1)
    return grouped.reshape(cfg.qkv_rows, h)


def naive_qkv(cfg: LlamaConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The common mistake (plain cat) -- kept only so a test can show the parity check catches it."""
    return torch.cat([q, k, v], dim=0)


def deinterleave_qkv(cfg: LlamaConfig, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g, hd, hpg, h = cfg.num_query_groups, cfg.head_dim, cfg.heads_per_group, qkv.shape[-1]
    grouped = qkv.reshape(g, (hpg + 2) * hd, h)
    q = grouped[:, : hpg * hd].reshape(-1, h)
    k = grouped[:, hpg * hd: (hpg + 1) * hd].reshape(-1, h)
    v = grouped[:, (hpg + 1) * hd:].reshape(-1, h)
    return q.contiguous(), k.contiguous(), v.contiguous()


def pad_vocab(cfg: LlamaConfig, weight: torch.Tensor) -> torch.Tensor:
    """Zero rows up to the padded vocabulary (never produced by the tokenizer; their logits are ignored)."""
    extra = cfg.padded_vocab_size - weight.shape[0]
    if extra == 0:
        return weight
    return torch.cat([weight, weight.new_zeros(extra, weight.shape[1])], dim=0)


def module_param_names(cfg: LlamaConfig, spec: str) -> dict[str, str]:
    """HF tensor name -> megatron module parameter name (model.state_dict() key) for one layer spec.

    Layer-local q/k/v and gate/up map onto one fused megatron parameter. The TE spec keeps the pre-attention and
    pre-MLP norms inside the fused linears; the local spec has separate norm modules.
    """
    names = {HF_EMBEDDING: EMBEDDING, HF_FINAL_NORM: FINAL_NORM, HF_OUTPUT: OUTPUT}
    for layer in range(cfg.num_layers):
        base = f"decoder.layers.{layer}"
        if spec == "te":
            in_norm = f"{base}.self_attention.linear_qkv.layer_norm_weight"
            post_norm = f"{base}.mlp.linear_fc1.layer_norm_weight"
        elif spec == "local":
            in_norm, post_norm = f"{base}.input_layernorm.weight", f"{base}.pre_mlp_layernorm.weight"
        else:
            raise ValueError(f"spec must be 'te' or 'local', got {spec!r}")
        names.update({
            hf_layer(layer, HF_IN_NORM): in_norm,
            hf_layer(layer, HF_POST_NORM): post_norm,
            hf_layer(layer, HF_Q): f"{base}.self_attention.linear_qkv.weight",
            hf_layer(layer, HF_K): f"{base}.self_attention.linear_qkv.weight",
            hf_layer(layer, HF_V): f"{base}.self_attention.linear_qkv.weight",
            hf_layer(layer, HF_O): f"{base}.self_attention.linear_proj.weight",
            hf_layer(layer, HF_GATE): f"{base}.mlp.linear_fc1.weight",
            hf_layer(layer, HF_UP): f"{base}.mlp.linear_fc1.weight",
            hf_layer(layer, HF_DOWN): f"{base}.mlp.linear_fc2.weight",
        })
    return names
