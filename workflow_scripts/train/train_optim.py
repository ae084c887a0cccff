"""Optimizer pieces for the CPU path (megatron's optimizer, DDP and clip_grads are CUDA-only in megatron-core 0.16):
AdamW with weight-decay groups, data-parallel gradient averaging, the tensor-parallel sum of sequence-parallel
gradients, and TP-aware gradient-norm clipping."""
from __future__ import annotations

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on 1-D parameters (norms, biases), as Megatron and the HF Trainer do."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, foreach=False)


def average_data_parallel_grads(params: list[torch.nn.Parameter]) -> None:
    from megatron.core import parallel_state

    if parallel_state.get_data_parallel_world_size() == 1:
        return
    group = parallel_state.get_data_parallel_group()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad, group=group)
            p.grad /= parallel_state.get_data_parallel_world_size()


def sum_sequence_parallel_grads(params: list[torch.nn.Parameter]) -> None:
    """Parameters replicated over TP but applied to this rank's sequence slice (norm weights, replicated LoRA factors
    under sequence parallelism: attribute `sequence_parallel`) hold partial gradients: sum them over the TP group,
    as megatron's finalize_model_grads does on the GPU path."""
    from megatron.core import parallel_state

    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        return
    group = parallel_state.get_tensor_model_parallel_group()
    for p in params:
        if p.grad is not None and getattr(p, "sequence_parallel", False):
            torch.distributed.all_reduce(p.grad, group=group)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Global L2 norm over the model (all pipeline stages), counting TP-replicated parameters once; clips in place;
    returns the norm."""
    from megatron.core import parallel_state

    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    device = params[0].device if params else torch.device("cpu")
    total = torch.zeros(1, dtype=torch.float64, device=device)
    for p in params:
        if p.grad is None:
            continue
        sharded = getattr(p, "tensor_model_parallel", False)
        if sharded or tp_rank == 0:
            total += p.grad.detach().double().pow(2).sum()
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(total, group=parallel_state.get_tensor_model_parallel_group())
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:  # each stage holds other layers' gradients
        torch.distributed.all_reduce(total, group=parallel_state.get_pipeline_model_parallel_group())
    norm = float(total.sqrt())
    if max_norm > 0 and norm > max_norm:
        coef = max_norm / (norm + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coef)
    return norm
