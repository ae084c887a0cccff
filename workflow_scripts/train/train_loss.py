"""The trainer's loss arithmetic, shared by the plain micro-batch loop (train.py) and the pipeline schedule
(train_pipeline.py), so that both compute the same numbers.

The model computes the per-token losses itself (GPTModel's `labels` path) from its [s, b, V/tp] logits: without
labels it returns the logits as a [b, s, V/tp] copy, which on a small-hidden model costs as much as the output layer.
`install_token_loss` replaces GPTModel's loss function with `logits_losses`, which excludes the padded vocabulary rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def install_token_loss(model, vocab_size: int) -> None:
    """Make `model(tokens, positions, mask, labels=targets)` return per-token cross-entropy [b, s] over the real
    vocabulary (megatron calls `self.compute_language_model_loss(labels [b, s], logits [s, b, V/tp])`)."""

    def compute_language_model_loss(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits_losses(logits, labels.t().contiguous(), vocab_size).t()

    model.compute_language_model_loss = compute_language_model_loss


def stage_output(model, tokens: torch.Tensor, targets: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token losses [b, s] of `tokens` at positions 0..s-1 predicting `targets` (on a pipeline stage before the
    last: its hidden states). The model must have had `install_token_loss`."""
    b, s = tokens.shape
    positions = torch.arange(s, device=tokens.device).unsqueeze(0).expand(b, s)
    # No mask by default: both layer specs' attention is causal without one (TE's by its mask type, the local spec's
    # SDPA core by is_causal, which also skips the masked blocks). CUDA-graph replay passes the causal mask its
    # capture was given as a static input (TE's causal kernels read none of its values).
    return model(tokens, positions, attention_mask, labels=targets)


def logits_losses(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Per-token cross-entropy (the shape of `targets`) from this rank's vocab-parallel logits [..., V/tp] over the
    real vocabulary (megatron's padding rows are excluded)."""
    from megatron.core import parallel_state, tensor_parallel

    logits = logits.float()
    per_rank = logits.shape[-1]
    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        # One fused log-softmax + NLL over the real rows (megatron's vocab-parallel version makes six passes).
        real = logits[..., :vocab_size].reshape(-1, min(vocab_size, per_rank))
        return F.cross_entropy(real, targets.reshape(-1), reduction="none").view(targets.shape)
    start = parallel_state.get_tensor_model_parallel_rank() * per_rank
    if start + per_rank > vocab_size:  # padded vocabulary rows would add to the softmax's denominator
        pad = torch.arange(start, start + per_rank, device=logits.device) >= vocab_size
        logits = logits.masked_fill(pad, -1e9)
    return tensor_parallel.vocab_parallel_cross_entropy(logits, targets)


def masked_mean(losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A micro-batch's training loss: the mean over the tokens its loss mask counts."""
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def row_mean(losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over a micro-batch's rows of each row's masked token mean: what the LoRA reference computes with one
    row per micro-batch, for any micro-batch size (a row without answer tokens adds 0, as it does there)."""
    return ((losses * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()


def eval_sums(losses: torch.Tensor, mask: torch.Tensor, per_row: bool) -> torch.Tensor:
    """(sum, count) in float64 of a batch's evaluation metric: per_row (LoRA, §1.8) each row's mean loss on its answer
    tokens, over rows that have any; else (pretraining, §2.7) the token NLLs the mask counts."""
    losses, mask = losses.double().cpu(), mask.double().cpu()
    if per_row:
        counted = mask.sum(dim=1)
        keep = counted > 0
        return torch.stack([((losses * mask).sum(dim=1)[keep] / counted[keep]).sum(), keep.sum().double()])
    return torch.stack([(losses * mask).sum(), mask.sum()])
