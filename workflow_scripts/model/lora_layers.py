"""LoRA over megatron-core's tensor-parallel linears (megatron-core has none of its own).

Adapters are child modules `lora` of the base linear, applied through a forward hook, so the base parameter names
(and hence converted checkpoints) are unchanged. TP layout (notes: megatron-core-on-cpu.md, LoRA section):
- column-parallel base (linear_qkv, linear_fc1): A [r, in] replicated; its output passes
  `copy_to_tensor_model_parallel_region` (identity forward, all-reduce backward) before B [out/tp, r], which is sharded
  like the base rows (fc1: [gate_i; up_i]);
- row-parallel base (linear_proj, linear_fc2): A [r, in/tp] sharded like the base columns, its output summed with
  `reduce_from_tensor_model_parallel_region`, B [out, r] replicated.
Under sequence parallelism the base linears take / give activations split along the sequence ([s/tp, b, h]), so the
adapters gather / reduce-scatter their rank-r activations instead (r columns cross the wire, not h): column kind
A x_slice -> `gather_from_sequence_parallel_region` -> B; row kind A_i x_i -> `reduce_scatter_to_sequence_parallel_region`
-> B. The replicated factor then sees only this rank's slice, so its gradient is a partial sum: it is marked
`sequence_parallel` and summed over the TP group (megatron's finalize_model_grads, train_optim on the CPU path).
PEFT semantics: y = W x + (alpha / r) * B A dropout(x); A kaiming-uniform, B zeros, so training starts at the base.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.model.lora import CONFIG, WEIGHTS, adapter_key  # the adapter file format (read back by `convert mcore-to-hf --lora`)

# target -> (attribute path inside a transformer layer, parallel kind)
TARGET_MODULES = {
    "linear_qkv": ("self_attention.linear_qkv", "column"),
    "linear_proj": ("self_attention.linear_proj", "row"),
    "linear_fc1": ("mlp.linear_fc1", "column"),
    "linear_fc2": ("mlp.linear_fc2", "row"),
}


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("linear_qkv", "linear_proj")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise PipelineInputError(f"lora.rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise PipelineInputError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        bad = [t for t in self.targets if t not in TARGET_MODULES]
        if bad or not self.targets:
            raise PipelineInputError(f"lora.targets {list(self.targets)}: choose among {sorted(TARGET_MODULES)}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraAdapter(nn.Module):
    """The two low-rank factors of one base linear, laid out for its tensor-parallel kind."""

    def __init__(self, kind: str, in_features: int, out_features: int, settings: LoraSettings, tp_size: int,
                 dtype: torch.dtype, device: torch.device, sequence_parallel: bool = False):
        super().__init__()
        self.kind, self.scale, self.sequence_parallel = kind, settings.scale, sequence_parallel
        self.dropout = nn.Dropout(settings.dropout)
        in_local = in_features // tp_size if kind == "row" else in_features
        out_local = out_features // tp_size if kind == "column" else out_features
        self.lora_A = nn.Parameter(torch.empty(settings.rank, in_local, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_local, settings.rank, dtype=dtype, device=device))
        # The sharded factor carries megatron's TP attributes (used by grad clipping and checkpoint layout).
        sharded, replicated = (self.lora_B, self.lora_A) if kind == "column" else (self.lora_A, self.lora_B)
        sharded.tensor_model_parallel, sharded.partition_dim, sharded.partition_stride = True, (0 if kind == "column" else 1), 1
        replicated.tensor_model_parallel = False
        replicated.sequence_parallel = sequence_parallel

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.sequence_parallel and self.kind == "column" and self.training):
            return self.dropout(x)
        # x is this rank's sequence slice: draw its mask from the per-TP-rank stream, as megatron does for
        # dropout inside sequence-parallel regions (the shared stream would repeat one mask on every slice)
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

        with get_cuda_rng_tracker().fork():
            return self.dropout(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from megatron.core.tensor_parallel import mappings

        h = torch.nn.functional.linear(self._dropout(x), self.lora_A)
        if self.sequence_parallel:
            h = (mappings.gather_from_sequence_parallel_region(h) if self.kind == "column"
                 else mappings.reduce_scatter_to_sequence_parallel_region(h))
        elif self.kind == "column":
            h = mappings.copy_to_tensor_model_parallel_region(h)
        else:
            h = mappings.reduce_from_tensor_model_parallel_region(h)
        return self.scale * torch.nn.functional.linear(h, self.lora_B)


def _add_lora_output(module: nn.Module, inputs: tuple, output):
    out, bias = output
    x = inputs[0]
    norm_weight = getattr(module, "layer_norm_weight", None)
    if norm_weight is not None:
        # Transformer Engine fuses the pre-norm (RMSNorm) into linear_qkv / linear_fc1: the adapter must see the
        # normalized input, as it does with the local spec where the norm is a separate module.
        # One fused kernel (fp32 inside) instead of five elementwise passes over [s, b, h].
        x = torch.nn.functional.rms_norm(x, x.shape[-1:], norm_weight, getattr(module, "eps", 1e-5))
    return out + module.lora(x).to(out.dtype), bias


def _submodule(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def lora_linears(model: nn.Module) -> Iterator[tuple[int, str, nn.Module]]:
    """(global layer number, target, base linear) for every adapted linear of this pipeline stage."""
    for layer in model.decoder.layers:
        for target, (path, _) in TARGET_MODULES.items():
            base = _submodule(layer, path)
            if hasattr(base, "lora"):
                yield layer.layer_number - 1, target, base


def apply_lora(model: nn.Module, settings: LoraSettings, seed: int) -> int:
    """Freeze the base model, attach adapters to the target linears; returns the local trainable parameter count.

    Replicated factors get identical values on every TP rank (one generator per layer and target seeded from `seed`);
    sharded factors are initialised from the full matrix and sliced, so any TP size gives the same model.
    """
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    for param in model.parameters():
        param.requires_grad_(False)
    count = 0
    for layer in model.decoder.layers:
        for target in settings.targets:
            path, kind = TARGET_MODULES[target]
            base = _submodule(layer, path)
            weight = base.weight
            out_local, in_local = weight.shape
            in_full = in_local * tp if kind == "row" else in_local
            out_full = out_local * tp if kind == "column" else out_local
            adapter = LoraAdapter(kind, in_full, out_full, settings, tp, weight.dtype, weight.device,
                                  sequence_parallel=bool(model.config.sequence_parallel))
            generator = torch.Generator().manual_seed(seed * 1000 + (layer.layer_number - 1) * 10 + list(TARGET_MODULES).index(target))
            full_a = torch.empty(settings.rank, in_full)
            bound = 1.0 / math.sqrt(in_full)
            full_a.uniform_(-bound, bound, generator=generator)
            with torch.no_grad():
                a = full_a if kind == "column" else full_a.chunk(tp, dim=1)[rank]
                adapter.lora_A.copy_(a.to(weight.dtype))
            base.lora = adapter
            base.register_forward_hook(_add_lora_output)
            count += sum(p.numel() for p in adapter.parameters())
    if hasattr(model, "embedding"):
        # With activation recompute (reentrant checkpointing) a layer whose input does not require grad produces
        # outputs without a graph, and the adapters inside it would get no gradient: the frozen embedding's output
        # must require grad (what HF's enable_input_require_grads does for PEFT).
        model.embedding.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    return count


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# --- global layout (workflow_scripts/model/lora.py's adapter files) <-> this rank's shards -------------------------------

def _fc1_split(t: torch.Tensor, tp: int) -> list[torch.Tensor]:
    """Global fc1 rows [gate; up] -> per-rank rows [gate_i; up_i]."""
    gate, up = t.chunk(2, dim=0)
    return [torch.cat([g, u]) for g, u in zip(gate.chunk(tp), up.chunk(tp))]


def _fc1_join(parts: list[torch.Tensor]) -> torch.Tensor:
    halves = [p.chunk(2, dim=0) for p in parts]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves])


def _shard_of(target: str, part: str, full: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    kind = TARGET_MODULES[target][1]
    if kind == "column" and part == "lora_B":
        return (_fc1_split(full, tp) if target == "linear_fc1" else list(full.chunk(tp, dim=0)))[rank]
    if kind == "row" and part == "lora_A":
        return full.chunk(tp, dim=1)[rank]
    return full


def _join(target: str, part: str, shards: list[torch.Tensor]) -> torch.Tensor:
    kind = TARGET_MODULES[target][1]
    if kind == "column" and part == "lora_B":
        return _fc1_join(shards) if target == "linear_fc1" else torch.cat(shards, dim=0)
    if kind == "row" and part == "lora_A":
        return torch.cat(shards, dim=1)
    return shards[0]


def gather_adapter_state(model: nn.Module, grads: bool = False) -> dict[str, torch.Tensor]:
    """Every adapter factor (or its gradient) of the whole model in the global layout, on every rank."""
    from megatron.core import parallel_state

    tp_group = parallel_state.get_tensor_model_parallel_group()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    local: dict[str, torch.Tensor] = {}
    for layer, target, base in lora_linears(model):
        for part in ("lora_A", "lora_B"):
            param = getattr(base.lora, part)
            value = (param.grad if grads else param).detach().float().contiguous()
            shards = [torch.empty_like(value) for _ in range(tp)]
            torch.distributed.all_gather(shards, value, group=tp_group)
            local[adapter_key(layer, target, part)] = _join(target, part, shards)
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return local
    stages: list[dict] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
    torch.distributed.all_gather_object(stages, local)
    return {k: v for stage in stages for k, v in stage.items()}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Set this rank's adapter shards from global-layout tensors (e.g. a saved adapter)."""
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    for layer, target, base in lora_linears(model):
        for part in ("lora_A", "lora_B"):
            key = adapter_key(layer, target, part)
            if key not in state:
                raise PipelineInputError(f"adapter tensor {key!r} is missing")
            param = getattr(base.lora, part)
            shard = _shard_of(target, part, state[key], tp, rank)
            if shard.shape != param.shape:
                raise PipelineInputError(f"adapter tensor {key!r}: shape {tuple(state[key].shape)} does not fit the model")
            with torch.no_grad():
                param.copy_(shard.to(param.dtype))


def save_adapter(model: nn.Module, settings: LoraSettings, out_dir) -> None:
    """Write the adapter folder (lora.py's format, global layout) atomically from global rank 0."""
    import json
    import os
    import shutil
    from pathlib import Path

    from safetensors.torch import save_file

    state = gather_adapter_state(model)
    if torch.distributed.get_rank() != 0:
        return
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
    meta = {"r": settings.rank, "alpha": settings.alpha, "dropout": settings.dropout,
            "target_modules": list(settings.targets)}
    (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
