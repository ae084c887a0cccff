"""The GPU optimizer path: megatron-core's DistributedDataParallel and `get_megatron_optimizer`.

DDP keeps the gradients in contiguous fp32 buffers (`main_grad`) and reduces them over the data-parallel group in
`finalize_model_grads`; with `distributed_optimizer` the Adam state and fp32 master weights are sharded over that
group (ZeRO-1) and the reduction is a reduce-scatter. The megatron optimizer keeps fp32 master copies of bf16
parameters, skips weight decay on 1-D parameters and biases (as train_optim.param_groups does on CPU) and clips by the
global norm over tensor- and pipeline-parallel ranks. megatron-core's DDP and optimizer allocate on CUDA, so the CPU
path stays train_optim's torch AdamW (shared notes megatron-core-on-cpu.md).

The trainer calls: zero_grad(), forward/backward on the unwrapped model (DDP's hooks sit on the parameters), step().
"""
from __future__ import annotations

from pathlib import Path

import torch


class MegatronOptimizer:
    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
                 clip_grad: float, bf16: bool, distributed: bool):
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                                   use_distributed_optimizer=distributed)
        self.ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)
        config = OptimizerConfig(optimizer="adam", lr=lr, weight_decay=weight_decay, adam_beta1=betas[0],
                                 adam_beta2=betas[1], adam_eps=eps, clip_grad=clip_grad, bf16=bf16,
                                 params_dtype=torch.bfloat16 if bf16 else torch.float32,
                                 use_distributed_optimizer=distributed)
        self.optimizer = get_megatron_optimizer(config, [self.ddp])
        self.distributed = distributed

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad(set_to_none)

    def step(self) -> float:
        """Reduce the gradients over data parallel, clip, update; returns the gradient norm before clipping."""
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads([self.ddp])
        _, grad_norm, _ = self.optimizer.step()
        return float(grad_norm) if grad_norm is not None else float("nan")

    # checkpointing (train_checkpoint): the per-rank state, plus the sharded Adam state of the distributed optimizer
    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():  # fp32 training: the main params are the (grad-requiring) model params themselves
            self.optimizer.load_state_dict(state)

    def save_sharded(self, folder: Path) -> None:
        """Collective over data parallel: DP rank 0 of each (TP, PP) position writes the gathered Adam state."""
        if self.distributed:
            self.optimizer.save_parameter_state(str(folder / _sharded_name()))

    def load_sharded(self, folder: Path) -> None:
        if self.distributed:
            with torch.no_grad():
                self.optimizer.load_parameter_state(str(folder / _sharded_name()))


def _sharded_name() -> str:
    from megatron.core import parallel_state

    return (f"optimizer_tp{parallel_state.get_tensor_model_parallel_rank()}"
            f"_pp{parallel_state.get_pipeline_model_parallel_rank()}.pt")
