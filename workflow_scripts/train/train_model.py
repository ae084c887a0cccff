"""How the trainer builds its model: the model config, the recompute choice, FP8 attention, the GPTModel itself
(random init or a converted checkpoint, vocabulary grown for added tokens, LoRA applied, token loss installed)."""
from __future__ import annotations

import logging
from typing import Any

import torch

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.train.train_config import TrainConfig
from workflow_scripts.train.train_loss import install_token_loss

log = logging.getLogger("train")


def model_config(cfg: TrainConfig):
    """The LlamaConfig the run trains (the checkpoint's, or the recipe's shape for random init), padded for TP."""
    from workflow_scripts.convert.conversion import read_model_config
    from workflow_scripts.model.llama_model import LlamaConfig

    model_cfg = read_model_config(cfg.checkpoint)[0] if cfg.checkpoint else LlamaConfig.from_json(dict(cfg.model_shape))
    return model_cfg.with_padding(cfg.tensor_parallel)


def resolve_recompute(cfg: TrainConfig, dp: int) -> tuple[str, dict[str, Any]]:
    """The recompute mode (cfg's, or for "auto" the cheapest that the memory estimate fits on this GPU; none on CPU)
    and what metrics.json records of the choice."""
    from workflow_scripts.train import train_memory

    layout = train_memory.layout_for(cfg, model_config(cfg), dp)
    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory if on_gpu else None
    mode, est = train_memory.choose(layout, device) if device else ("none", train_memory.estimate(layout))
    if cfg.recompute_activations != "auto":
        mode = cfg.recompute_activations
    if device and est[mode] > device * 0.9:
        log.warning("estimated peak %.1f GiB with recompute %s exceeds 90%% of this GPU's %.1f GiB", est[mode] / 2**30,
                    mode, device / 2**30)
    return mode, {"requested": cfg.recompute_activations, **train_memory.summary(mode, est, device)}


FP8_ATTENTION_MIN_HEAD_DIM = 64  # below it cuDNN has no FP8 attention ("No dot product attention backend", measured)


def fp8_attention(cfg: TrainConfig) -> bool:
    """FP8 attention as configured, except for heads too narrow for cuDNN's kernel (the demo's 16): bf16 there."""
    if not cfg.fp8_attention:
        return False
    head_dim = model_config(cfg).head_dim
    if head_dim < FP8_ATTENTION_MIN_HEAD_DIM:
        log.warning("fp8_attention: head_dim %d < %d has no FP8 attention kernel; attention stays bf16", head_dim,
                    FP8_ATTENTION_MIN_HEAD_DIM)
        return False
    return True


def build_model(cfg: TrainConfig, recompute: str = "none"):
    """GPTModel for this rank: random init (pretraining) or the converted checkpoint (LoRA/SFT), vocab-parallel out."""
    from megatron.core import dist_checkpointing

    from workflow_scripts.model.llama_model import build_gpt_model
    from workflow_scripts.model.lora_layers import apply_lora

    dtype = torch.float32 if cfg.precision == "fp32" else torch.bfloat16
    overrides: dict[str, Any] = {}
    if cfg.precision == "fp8":
        if cfg.spec != "te":
            raise PipelineInputError("train config: precision fp8 needs spec te (Transformer Engine)")
        overrides.update(fp8="hybrid", fp8_recipe=cfg.fp8_recipe, fp8_amax_history_len=cfg.fp8_amax_history_len,
                         fp8_dot_product_attention=fp8_attention(cfg))
    if cfg.sequence_parallel:
        overrides["sequence_parallel"] = True
    if cfg.rope_fusion and cfg.spec == "te":
        overrides["apply_rope_fusion"] = True
    if cfg.cuda_graphs:  # train_cuda_graphs.LayerGraphs captures them after the eager warm-up steps
        overrides["cuda_graph_impl"] = "transformer_engine"
    if recompute == "full":
        overrides.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif recompute == "selective":
        overrides.update(recompute_granularity="selective")
    model_cfg = model_config(cfg)
    if cfg.seq_length > model_cfg.max_position_embeddings:
        raise PipelineInputError(f"train config: seq_length {cfg.seq_length} exceeds the model's "
                                 f"max_position_embeddings {model_cfg.max_position_embeddings}")
    model = build_gpt_model(model_cfg, cfg.spec, params_dtype=dtype, parallel_output=True,
                            te_op_fuser=cfg.te_op_fuser, **overrides)
    if cfg.checkpoint:
        state = dist_checkpointing.load(model.sharded_state_dict(), cfg.checkpoint)
        model.load_state_dict(state)
    vocab_size = cfg.vocab_size
    if cfg.vocab_from_tokenizer:
        from workflow_scripts.data.tokenizer_files import load_tokenizer

        vocab_size = load_tokenizer(cfg.vocab_from_tokenizer).get_vocab_size(with_added_tokens=True)
    if vocab_size > model_cfg.vocab_size:
        model, model_cfg = resize_vocabulary(model, model_cfg, vocab_size, cfg, dtype, overrides)
    if cfg.lora is not None:
        apply_lora(model, cfg.lora, cfg.seed)
    install_token_loss(model, model_cfg.vocab_size)
    return model, model_cfg


def resize_vocabulary(model, model_cfg, vocab_size: int, cfg: TrainConfig, dtype: torch.dtype,
                      overrides: dict[str, Any]):
    """Grow the embedding and output rows to `vocab_size` (new tokens, e.g. ChatML's, added to the tokenizer), as
    transformers 4.40's resize_token_embeddings does: old rows kept, new rows drawn from N(0, 0.02)."""
    import dataclasses

    from megatron.core import parallel_state

    from workflow_scripts.model.llama_model import build_gpt_model

    tp, rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    group = parallel_state.get_tensor_model_parallel_group()
    new_cfg = dataclasses.replace(model_cfg, vocab_size=vocab_size, padded_vocab_size=0).with_padding(tp)
    bigger = build_gpt_model(new_cfg, cfg.spec, params_dtype=dtype, parallel_output=True, te_op_fuser=cfg.te_op_fuser,
                             **overrides)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(cfg.seed)
    for key in ("embedding.word_embeddings.weight", "output_layer.weight"):
        if key not in state:  # pipeline parallel: the embedding is on the first stage, the output layer on the last
            continue
        shards = [torch.empty_like(state[key]) for _ in range(tp)]
        torch.distributed.all_gather(shards, state[key].contiguous(), group=group)
        old = torch.cat(shards)[: model_cfg.vocab_size]
        grown = torch.zeros(new_cfg.padded_vocab_size, old.shape[1], dtype=old.dtype)
        grown[: model_cfg.vocab_size] = old.cpu()
        added = vocab_size - model_cfg.vocab_size
        grown[model_cfg.vocab_size : vocab_size] = torch.randn(added, old.shape[1], generator=generator) * 0.02
        state[key] = grown.chunk(tp)[rank].to(state[key].device)
    bigger.load_state_dict(state)
    return bigger, new_cfg
