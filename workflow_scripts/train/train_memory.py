"""Activation recompute chosen from memory: an estimate of one GPU's peak for each recompute mode, and the choice.

The estimate counts what one rank holds at its peak (bytes):
- weights: this rank's share of the parameters (TP x PP) in the training dtype; fp8 adds TE's fp8 copy and transpose
  of every linear weight (2 bytes per parameter);
- trainable state: per trainable parameter an fp32 gradient, fp32 master copy and two Adam moments (16 bytes; the
  master copy and moments sharded over DP with the distributed optimizer);
- activations saved for the backward pass, per token and layer (s x micro_batch tokens; a pipeline stage holds
  num_layers / PP layers, and its first stage up to PP micro-batches in flight under 1F1B):
    attention: norm input, norm output (h, replicated under TP unless SP), q, k, v and the attention output
    (h + 2 kv + h, split by TP); MLP: norm input (h, replicated), fc1 output (2 ffn, split by TP); a trainable base
    also keeps the MLP norm output (h) and the activation output (ffn / TP) for its weight gradients; each LoRA
    adapter keeps its dropped-out input and dropout mask (in_features x (bytes + 1));
  flash attention (TE) keeps no s x s scores, so "selective" (recompute the attention core) equals "none" there; the
  local spec keeps the fp32 softmax [heads/TP, s, s] per sample, which selective recompute drops;
  "full" keeps each layer's input (h) plus one layer's activations while it is recomputed;
- logits: bf16/fp32 logits, their fp32 copy and its gradient ([s, V/TP] per sample, fp32 x 2 + dtype bytes).
CUDA's own context and the allocator's slack are not counted: the choice leaves `margin` of the device free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODES = ("none", "selective", "full")
GIB = 1024**3


@dataclass(frozen=True)
class MemoryLayout:
    """What the estimate needs to know about one training run."""

    hidden: int
    ffn: int
    kv_hidden: int           # num_query_groups x head_dim
    heads: int
    layers: int
    vocab: int               # padded vocabulary
    params: int              # whole model
    trainable_params: int    # whole model (LoRA: the adapters)
    lora_inputs: int         # sum of in_features of the adapted linears of one layer, per token (replicated part)
    seq: int
    micro_batch: int
    tp: int = 1
    pp: int = 1
    dp: int = 1
    sp: bool = False
    precision: str = "bf16"  # fp32 | bf16 | fp8
    spec: str = "te"
    distributed_optimizer: bool = True
    frozen_base: bool = True


def _bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def estimate(layout: MemoryLayout) -> dict[str, float]:
    """Estimated peak bytes of one rank for each recompute mode, and its parts."""
    L, b = layout, _bytes(layout.precision)
    tokens = L.seq * L.micro_batch
    rep = L.tp if L.sp else 1  # SP splits the replicated [s, b, h] tensors over the TP group
    layers_here = L.layers // L.pp
    in_flight = L.pp  # 1F1B: the first stage holds up to PP micro-batches' activations
    weights = L.params / (L.tp * L.pp) * b + (L.params / (L.tp * L.pp) * 2 if L.precision == "fp8" else 0)
    sharded_state = 12 / (L.dp if L.distributed_optimizer else 1)
    state = L.trainable_params / (L.tp * L.pp) * (4 + sharded_state)
    replicated = 3 * L.hidden + (0 if L.frozen_base else L.hidden)
    split = (2 * L.hidden + 2 * L.kv_hidden) + 2 * L.ffn + (0 if L.frozen_base else L.ffn)
    per_token = (replicated / rep + split / L.tp) * b + L.lora_inputs / rep * (b + 1)
    layer_none = per_token * tokens
    scores = (L.heads / L.tp) * L.seq * L.seq * L.micro_batch * 4 if L.spec == "local" else 0
    logits = tokens * (L.vocab / L.tp) * (4 * 2 + b)
    activations = {
        "none": (layer_none + scores) * layers_here * in_flight,
        "selective": layer_none * layers_here * in_flight,
        "full": L.hidden / rep * b * tokens * layers_here * in_flight + layer_none + scores,
    }
    out = {mode: weights + state + activations[mode] + logits for mode in MODES}
    out.update(weights=weights, optimizer_state=state, logits=logits,
               **{f"activations_{mode}": value for mode, value in activations.items()})
    return out


def choose(layout: MemoryLayout, device_bytes: float, margin: float = 0.1) -> tuple[str, dict[str, float]]:
    """The cheapest mode whose estimate fits `device_bytes` with `margin` left free: none, then selective, then full
    (full when nothing fits: the run may still fail, and the log says by how much)."""
    est = estimate(layout)
    budget = device_bytes * (1 - margin)
    for mode in MODES:
        if est[mode] <= budget:
            return mode, est
    return "full", est


def summary(mode: str, est: dict[str, Any], device_bytes: float | None) -> dict[str, Any]:
    """What metrics.json records: the choice, the device, and each estimate in GiB."""
    return {"recompute": mode, "device_gib": round(device_bytes / GIB, 2) if device_bytes else None,
            **{f"estimate_{k}_gib": round(v / GIB, 2) for k, v in est.items()}}


def llama_params(hidden: int, ffn: int, heads: int, groups: int, head_dim: int, layers: int, vocab: int) -> int:
    """Untied embedding and output layer, per layer q/k/v/o, gate/up/down and two norms, the final norm."""
    q, kv = heads * head_dim, groups * head_dim
    per_layer = hidden * (q + 2 * kv) + q * hidden + 3 * hidden * ffn + 2 * hidden
    return 2 * vocab * hidden + layers * per_layer + hidden


def layout_for(cfg, model_cfg, dp: int) -> MemoryLayout:
    """The MemoryLayout of a TrainConfig (train_config.TrainConfig) on a LlamaConfig with its padding set."""
    from workflow_scripts.model.lora_param_count import linear_shapes, lora_trainable_params

    m = model_cfg
    vocab = m.padded_vocab_size or m.vocab_size
    params = llama_params(m.hidden_size, m.intermediate_size, m.num_attention_heads, m.num_query_groups, m.head_dim,
                          m.num_layers, vocab)
    lora_inputs, trainable = 0, params
    if cfg.lora is not None:
        shapes = linear_shapes(m.hidden_size, m.num_attention_heads, m.num_query_groups, m.intermediate_size,
                               m.head_dim)
        lora_inputs = sum(shapes[t][0] for t in cfg.lora.targets)
        trainable = lora_trainable_params(m.num_layers, m.hidden_size, m.num_attention_heads, m.num_query_groups,
                                          m.intermediate_size, cfg.lora.rank, cfg.lora.targets, m.head_dim)
    return MemoryLayout(hidden=m.hidden_size, ffn=m.intermediate_size, kv_hidden=m.num_query_groups * m.head_dim,
                        heads=m.num_attention_heads, layers=m.num_layers, vocab=vocab, params=params,
                        trainable_params=trainable, lora_inputs=lora_inputs, seq=cfg.seq_length,
                        micro_batch=cfg.micro_batch_size, tp=cfg.tensor_parallel, pp=cfg.pipeline_parallel, dp=dp,
                        sp=cfg.sequence_parallel, precision=cfg.precision, spec=cfg.spec,
                        distributed_optimizer=cfg.distributed_optimizer, frozen_base=cfg.lora is not None)
