"""torch.distributed and megatron's parallel state for one process or a torchrun group (gloo on CPU, NCCL on GPU).

Shared by conversion, generation and training; re-exported by llama_model, where its callers import it.
"""
from __future__ import annotations

import os

import torch

from workflow_scripts.core.errors import PipelineInputError


def init_parallel(tp: int = 1, pp: int = 1, seed: int = 1234, te_rng_tracker: bool = False) -> None:
    """torch.distributed (gloo on CPU, NCCL on GPU; env:// under torchrun, else a 1-process group) + megatron state.
    `te_rng_tracker`: Transformer Engine's RNG tracker, which CUDA-graph capture needs (GPU only)."""
    from megatron.core import parallel_state, tensor_parallel

    from workflow_scripts.model import megatron_cpu_compat

    megatron_cpu_compat.apply()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "RANK" in os.environ:
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            torch.distributed.init_process_group(backend)
        else:
            store = torch.distributed.HashStore()
            torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)
    world = torch.distributed.get_world_size()
    if world % (tp * pp):
        raise PipelineInputError(f"world size {world} is not a multiple of tp*pp = {tp * pp}")
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, te_rng_tracker=te_rng_tracker)


def shutdown_parallel() -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
