"""RMSNorm for the local (CPU) layer spec that also runs under sequence parallelism.

megatron-core's local spec builds `WrappedTorchNorm`, which refuses `sequence_parallel` outright. The norm itself needs
nothing more under SP (each rank normalises its own sequence slice); only its weight's gradient, a partial sum over
that slice, must be summed over the tensor-parallel group. megatron marks such weights `sequence_parallel = True`
(its finalize_model_grads sums them; so does train_optim on the CPU path); so does this one. The arithmetic is
torch.nn.RMSNorm's, so models and checkpoints are those of WrappedTorchNorm.
"""
from __future__ import annotations

import torch


class LocalRMSNorm(torch.nn.RMSNorm):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused) -> None:
        super().__init__(normalized_shape=hidden_size, eps=eps)
        self.weight.sequence_parallel = bool(config.sequence_parallel)  # type: ignore[attr-defined]
