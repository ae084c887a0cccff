"""The layout-independent part of a training checkpoint (the torch-optimizer path): LoRA adapters and the Adam
moments as megatron dist_checkpointing ShardedTensors with their global shape and offsets, so that a run saved at one
TP/PP/DP layout resumes at another (dist_checkpointing reassembles the shards each new rank needs).

- Full-model training: each parameter's sharding is the model's own sharded_state_dict entry (megatron's, with the
  fc1 [gate; up] split of swiglu and the global layer numbers of pipeline stages); the moments copy it.
- LoRA: the adapters are not in megatron's sharded_state_dict (the base linear's ignores them): each factor is named
  by its global layer (workflow_scripts.model.lora.adapter_key) and sharded as lora_layers documents (column B by
  rows, row A by columns, the other replicated over TP); fc1's B rows are [gate_i; up_i] per rank, so it gets the
  swiglu split too.
Adam's step count is one number for the whole run (every trainable parameter gets a gradient every step), kept in the
per-rank file. What is per rank only (RNG) is re-seeded by the caller when the layout changes.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from workflow_scripts.core.errors import PipelineInputError

log = logging.getLogger("train")
STATE = "state"  # the dist_checkpointing folder beside model/
MOMENTS = ("exp_avg", "exp_avg_sq")  # torch AdamW's per-parameter tensors, shaped like the parameter


def layout() -> dict[str, int]:
    """This run's parallel layout (what a resharding resume may change)."""
    from megatron.core import parallel_state as ps

    return {"tensor_parallel": ps.get_tensor_model_parallel_world_size(),
            "pipeline_parallel": ps.get_pipeline_model_parallel_world_size(),
            "data_parallel": ps.get_data_parallel_world_size(), "world_size": torch.distributed.get_world_size()}


def _lora_sharded(model: torch.nn.Module) -> dict[int, Any]:
    """id(parameter) -> ShardedTensor (or swiglu factory) of every adapter factor of this rank."""
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing import ShardedTensor
    from megatron.core.transformer.mlp import apply_swiglu_sharded_factory

    from workflow_scripts.model.lora import adapter_key
    from workflow_scripts.model.lora_layers import lora_linears

    tp, tp_rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    dp_rank = ps.get_data_parallel_rank(with_context_parallel=True)
    out: dict[int, Any] = {}
    for layer, target, base in lora_linears(model):
        for part in ("lora_A", "lora_B"):
            param = getattr(base.lora, part)
            key = f"lora.{adapter_key(layer, target, part)}"
            if getattr(param, "tensor_model_parallel", False):
                sharded = ShardedTensor.from_rank_offsets(key, param, (param.partition_dim, tp_rank, tp),
                                                          replica_id=(0, 0, dp_rank))
                if target == "linear_fc1":  # rows [gate_i; up_i]: the global tensor is [gate; up]
                    sharded = apply_swiglu_sharded_factory(sharded, ())
            else:
                sharded = ShardedTensor.from_rank_offsets(key, param, replica_id=(0, tp_rank, dp_rank))
            out[id(param)] = sharded
    return out


def param_shardings(model: torch.nn.Module, full_model: bool) -> dict[int, Any]:
    """id(parameter) -> its sharded description, for every trainable parameter of this rank (an error names one
    without)."""
    from megatron.core.dist_checkpointing.utils import extract_sharded_tensors_and_factories
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    if full_model:
        sharded, _ = extract_sharded_tensors_and_factories(model.sharded_state_dict())
        by_id = {id(t.data): t for t in nested_values(sharded)}
    else:
        by_id = _lora_sharded(model)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in by_id]
    if missing:
        raise PipelineInputError(f"checkpoint: trainable parameter(s) {missing[:4]} have no sharded layout")
    return by_id


def _moments(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """The Adam moments of `param`, created as zeros where a fresh optimizer has none yet (they are loaded into)."""
    state = optimizer.state[param]
    for name in MOMENTS:
        if name not in state:
            state[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


def sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  full_model: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The sharded state dict (LoRA factors unless full_model, Adam moments of every trainable parameter) and the
    local tensors its entries fill on load, by the same nested key."""
    from megatron.core.dist_checkpointing.optimizer import make_sharded_optimizer_tensor

    shardings = param_shardings(model, full_model)
    names = {id(p): n for n, p in model.named_parameters()}  # local names: unique on this rank (the sharded keys of
    out: dict[str, Any] = {}                                  # a full model's layers are one stacked tensor's)
    targets: dict[str, torch.Tensor] = {}
    for param in (p for group in optimizer.param_groups for p in group["params"]):
        sharded, name = shardings[id(param)], names[id(param)]
        if not full_model:
            out[name], targets[name] = sharded, param
        state = _moments(optimizer, param)
        for moment in MOMENTS:
            key = f"optimizer.{moment}.{name}"
            out[key] = make_sharded_optimizer_tensor(sharded, state[moment], f"optimizer.{moment}")
            targets[key] = state[moment]
    return out, targets


def adam_step(optimizer: torch.optim.Optimizer) -> float:
    """Adam's step count, the same for every trainable parameter (named where not: it could not be resharded)."""
    steps = {float(s["step"]) for s in optimizer.state.values() if "step" in s}
    if len(steps) > 1:
        raise PipelineInputError(f"checkpoint: Adam step counts differ between parameters ({sorted(steps)}); "
                                 "the optimizer state cannot be saved layout-independently")
    return steps.pop() if steps else 0.0


def save_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, full_model: bool) -> None:
    """Collective: every rank writes its shards of <folder>/state."""
    from workflow_scripts.train.train_checkpoint import dist_save

    (folder / STATE).mkdir(exist_ok=True)
    sharded, _ = sharded_state(model, optimizer, full_model)
    dist_save(sharded, folder / STATE)


def load_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, full_model: bool,
               step: float) -> None:
    """Collective: this rank's shards of the adapters and moments from <folder>/state, whatever layout saved them;
    Adam's step count set to `step`."""
    from megatron.core import dist_checkpointing

    sharded, targets = sharded_state(model, optimizer, full_model)
    loaded = dist_checkpointing.load(sharded, str(folder / STATE))
    with torch.no_grad():
        for key, target in targets.items():
            if tuple(loaded[key].shape) != tuple(target.shape):
                raise PipelineInputError(f"{folder / STATE}: {key} has shape {tuple(loaded[key].shape)}, this rank "
                                         f"needs {tuple(target.shape)}")
            target.copy_(loaded[key])
    for param in (p for group in optimizer.param_groups for p in group["params"]):
        optimizer.state[param]["step"] = torch.tensor(step, dtype=torch.float32)
