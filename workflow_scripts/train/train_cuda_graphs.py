"""CUDA graphs for the training step (`cuda_graphs: true`; GPU, te spec, megatron optimizer, no activation recompute).

megatron-core's TECudaGraphHelper captures each TransformerLayer's forward and backward with Transformer Engine's
`make_graphed_callables` once megatron's `cuda_graph_warmup_steps` (3) steps have run eagerly; later training
micro-batches replay one graph per layer, so a layer's hundreds of kernel launches and TE's per-module host work (13%
of an fp8 step in benchmarks/lora_step_profile.py) cost one launch. Evaluation (model.eval()) runs eagerly: TE's
graphed forward falls back to the module's own outside the training state it captured.

What a replay needs, and the trainer gives it (`LayerGraphs.mask`, `set_micro_batch`): the causal mask as a tensor (the
capture's static input; TE's causal attention reads no mask values), the micro-batch index (TE recasts fp8 weights on
a step's first micro-batch only) and an RNG tracker that is graph-safe (TE's: `init_parallel(te_rng_tracker=True)`).
"""
from __future__ import annotations

import logging

import torch

from workflow_scripts.core.errors import PipelineInputError

log = logging.getLogger("train")


def check_cuda_graphs(cfg, recompute: str | None = None) -> None:
    """Refuse, naming the keys, a layout the captured graphs cannot serve (`recompute`: once resolved from memory)."""
    why = []
    if not torch.cuda.is_available():
        why.append("CUDA")
    if cfg.spec != "te":
        why.append(f"spec te (not {cfg.spec})")
    if cfg.optimizer_impl == "torch":
        why.append("the megatron optimizer (optimizer_impl auto or megatron, not torch)")
    if cfg.pipeline_parallel != 1:
        why.append(f"pipeline_parallel 1 (not {cfg.pipeline_parallel})")
    if recompute not in (None, "none"):
        why.append(f"recompute_activations none (resolved to {recompute})")
    if why:
        raise PipelineInputError("train config: cuda_graphs needs " + ", ".join(why))


def use_side_stream() -> None:
    """Run the whole job on a side stream, set before the model exists. Autograd runs a parameter's gradient
    accumulation on the stream current when its accumulator was made (megatron's DDP makes them at wrap time); on the
    legacy default stream that work would join the backward capture's blocking stream, which CUDA refuses
    ("operation would make the legacy stream depend on a capturing blocking stream"). megatron's own `local` graph
    manager switches streams for the same reason."""
    torch.cuda.set_stream(torch.cuda.Stream())


def causal_mask(micro_batch_size: int, seq_length: int, device: torch.device) -> torch.Tensor:
    """megatron's boolean causal mask [b, 1, s, s] (True = masked), the shape the capture's static input has."""
    mask = ~torch.tril(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device))
    return mask.view(1, 1, seq_length, seq_length).expand(micro_batch_size, 1, seq_length, seq_length).contiguous()


class LayerGraphs:
    """Captures the layers' graphs after the warm-up steps; `before_step(i)` is called ahead of step i's work."""

    def __init__(self, model: torch.nn.Module, optimizer, seq_length: int, micro_batch_size: int,
                 global_batch_size: int, data_parallel: int):
        from megatron.core import num_microbatches_calculator as calc

        self.model, self.optimizer = model, optimizer
        self.seq_length, self.micro_batch_size = seq_length, micro_batch_size
        self.warmup_steps = model.config.cuda_graph_warmup_steps
        self.captured = False
        self.mask = causal_mask(micro_batch_size, seq_length, torch.device("cuda", torch.cuda.current_device()))
        # the helper counts micro-batches through megatron's global calculator
        calc.destroy_num_microbatches_calculator()
        calc.init_num_microbatches_calculator(torch.distributed.get_rank(), None, global_batch_size, micro_batch_size,
                                              data_parallel)

    def before_step(self, step_index: int) -> None:
        if self.captured or step_index < self.warmup_steps:
            return
        import time

        from megatron.core.transformer.cuda_graphs import TECudaGraphHelper

        start = time.perf_counter()
        helper = TECudaGraphHelper(model=[self.optimizer.ddp], config=self.model.config, seq_length=self.seq_length,
                                   micro_batch_size=self.micro_batch_size, optimizers=[self.optimizer.optimizer])
        helper.create_cudagraphs()
        if self.optimizer.ddp.use_forward_hook:  # only with overlapped parameter all-gathers
            helper.cuda_graph_set_manual_hooks()
        self.captured = True
        log.info("cuda graphs: %d layers captured after %d eager steps in %.1f s",
                 len(helper.flattened_callables), self.warmup_steps, time.perf_counter() - start)

    def set_micro_batch(self, index: int) -> None:
        from megatron.core.pipeline_parallel.schedules import set_current_microbatch

        set_current_microbatch(self.model, index)
