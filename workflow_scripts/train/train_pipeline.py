"""Pipeline-parallel steps of the trainer through megatron-core's own 1F1B schedule.

With pipeline_parallel > 1 each rank holds a contiguous slice of the layers (GPTModel built with pre_process /
post_process from parallel_state); megatron's `forward_backward_pipelining_without_interleaving` moves activations
and their gradients between the stages. Every stage reads the same micro-batches (the first needs the tokens, the last
the targets and loss mask). Losses and evaluation sums exist only on the last stage and are summed over the pipeline
group, so every rank (rank 0 logs) sees them.

The loss of a micro-batch is its masked token mean, divided by the number of micro-batches by the schedule: the same
gradient as the trainer's non-pipelined loop, which is what makes PP 2 reproduce PP 1's losses.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

from workflow_scripts.train.train_data import Batch
from workflow_scripts.train.train_loss import stage_output


def _pipeline_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over the pipeline group: the last stage holds the value, the others contribute zeros."""
    from megatron.core import parallel_state

    torch.distributed.all_reduce(value, group=parallel_state.get_pipeline_model_parallel_group())
    return value


def _run_schedule(model, batches: list[Batch], device: torch.device, seq_length: int,
                  loss_of: Callable[[torch.Tensor, Batch], tuple[torch.Tensor, dict]], forward_only: bool) -> list[dict]:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    def forward_step(data_iterator: Iterator[Batch], stage_model):
        batch = next(data_iterator).to(device)  # the schedule gives non-first stages their input itself
        return stage_output(stage_model, batch.tokens, batch.targets), lambda out: loss_of(out, batch)

    return get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=iter(batches), model=[model], num_microbatches=len(batches),
        seq_length=seq_length, micro_batch_size=batches[0].tokens.shape[0], forward_only=forward_only)


def train_microbatches(model, batches: Iterable[Batch], device: torch.device, seq_length: int,
                       batch_loss: Callable[[torch.Tensor, Batch], torch.Tensor]) -> tuple[float, int]:
    """Forward and backward of one optimizer step's micro-batches; returns (mean loss, tokens) on every stage.
    `batch_loss(losses, batch)` is the loss of one micro-batch (from its per-token losses) (the trainer's masked mean)."""
    batches = list(batches)

    def loss_of(losses: torch.Tensor, batch: Batch):
        loss = batch_loss(losses, batch)
        return loss, {"loss": loss.detach().clone()}  # the schedule divides `loss` in place

    stored = _run_schedule(model, batches, device, seq_length, loss_of, forward_only=False)
    total = torch.zeros(1, dtype=torch.float64, device=device)
    for item in stored:  # last stage only
        total += item["loss"].double() / len(batches)
    return float(_pipeline_sum(total)), sum(b.tokens.numel() for b in batches)


@torch.no_grad()
def eval_microbatches(model, batches: list[Batch], device: torch.device, seq_length: int,
                      batch_sums: Callable[[torch.Tensor, Batch], torch.Tensor]) -> torch.Tensor:
    """(sum, count) of the evaluation metric over `batches` on every stage, `batch_sums(losses, batch)` giving one
    batch's (the trainer's, as without pipelining). Batches of one size per schedule call (the schedule sends
    fixed-shape activations), so a short last batch gets its own call."""
    sums = torch.zeros(2, dtype=torch.float64, device=device)

    def loss_of(losses: torch.Tensor, batch: Batch):
        return losses.sum() * 0, {"sums": batch_sums(losses, batch)}

    groups: dict[int, list[Batch]] = {}
    for batch in batches:
        groups.setdefault(batch.tokens.shape[0], []).append(batch)
    for size in sorted(groups, reverse=True):
        for item in _run_schedule(model, groups[size], device, seq_length, loss_of, forward_only=True):
            sums += item["sums"].to(sums.device)
    return _pipeline_sum(sums)
