"""The trainer's loss arithmetic, shared by the plain micro-batch loop (train.py) and the pipeline schedule
(train_pipeline.py), so that both compute the same numbers."""
from __future__ import annotations

import torch


def model_output(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [b, s, V/tp] (or, on a pipeline stage before the last, hidden states) of `tokens` at positions 0..s-1."""
    from .megatron_cpu_compat import causal_attention_mask

    b, s = tokens.shape
    positions = torch.arange(s, device=tokens.device).unsqueeze(0).expand(b, s)
    # The local spec needs an explicit causal mask (its default is built on "cuda"); TE's attention is causal itself.
    mask = None if tokens.is_cuda else causal_attention_mask(s)
    return model(tokens, positions, mask)


def logits_losses(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Per-token cross-entropy [b, s] from this rank's vocab-parallel logits [b, s, V/tp] over the real vocabulary
    (megatron's padding rows are excluded)."""
    from megatron.core import parallel_state, tensor_parallel

    logits = logits.float()
    per_rank = logits.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * per_rank
    if start + per_rank > vocab_size:  # padded vocabulary rows would add to the softmax's denominator
        pad = torch.arange(start, start + per_rank, device=logits.device) >= vocab_size
        logits = logits.masked_fill(pad, -1e9)
    return tensor_parallel.vocab_parallel_cross_entropy(logits, targets)


def masked_mean(losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A micro-batch's training loss: the mean over the tokens its loss mask counts."""
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def eval_sums(losses: torch.Tensor, mask: torch.Tensor, per_row: bool) -> torch.Tensor:
    """(sum, count) in float64 of a batch's evaluation metric: per_row (LoRA, §1.8) each row's mean loss on its answer
    tokens, over rows that have any; else (pretraining, §2.7) the token NLLs the mask counts."""
    losses, mask = losses.double().cpu(), mask.double().cpu()
    if per_row:
        counted = mask.sum(dim=1)
        keep = counted > 0
        return torch.stack([((losses * mask).sum(dim=1)[keep] / counted[keep]).sum(), keep.sum().double()])
    return torch.stack([(losses * mask).sum(), mask.sum()])
