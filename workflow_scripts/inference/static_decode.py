"""The reference greedy path: megatron-core's StaticInferenceContext as megatron's static text-generation controller
drives it, and a cache-free re-forward (the test oracle). generate.py runs decode_engine.py by default; this path stays
selectable (`--engine static`) so the two can be compared token for token and timed side by side.

As megatron's controller does, a batch is prefilled up to its shortest prompt, then advances one position per step,
feeding the prompt's own token where a longer prompt has not ended yet, so no padding and no masks are needed;
finished samples are dropped from the batch and the cache. The cache buffers are allocated here (megatron would put
them on torch.cuda.current_device(), absent on CPU).
"""
from __future__ import annotations

import torch


def _forward(model, tokens: torch.Tensor, start: int, context=None) -> torch.Tensor:
    """Logits [b, s, v] of `tokens` placed at positions start.. (causal mask; with a cache only the last position)."""
    from workflow_scripts.model.megatron_cpu_compat import causal_attention_mask

    batch, seq = tokens.shape
    positions = torch.arange(start, start + seq, device=tokens.device).unsqueeze(0).expand(batch, seq)
    mask = causal_attention_mask(seq, tokens.device) if context is None or start == 0 else None
    extra = {} if context is None else {"inference_context": context, "runtime_gather_output": True}
    return model(tokens, positions, mask, **extra)


def _new_context(model, batch: int, max_seq: int, dtype: torch.dtype, device: torch.device):
    """A static KV cache with its buffers already allocated on `device`, [max_seq, batch, groups, head_dim] per layer."""
    from megatron.core.inference.contexts.static_context import StaticInferenceContext

    context = StaticInferenceContext(batch, max_seq)
    for layer in model.decoder.layers:
        attention = layer.self_attention
        groups = attention.num_query_groups_per_partition
        shape_k = (max_seq, batch, groups, attention.key_hidden_size)
        shape_v = (max_seq, batch, groups, attention.val_hidden_size)
        context.key_value_memory_dict[attention.layer_number] = (
            torch.zeros(shape_k, dtype=dtype, device=device), torch.zeros(shape_v, dtype=dtype, device=device))
    return context


def _keep_rows(context, keep: torch.Tensor) -> None:
    """Drop finished samples from every layer's cache (rows of the batch dimension)."""
    for number, (keys, values) in context.key_value_memory_dict.items():
        context.key_value_memory_dict[number] = (keys[:, keep].contiguous(), values[:, keep].contiguous())


def _pick(logits: torch.Tensor, vocab_size: int, eos_id: int, suppress_eos: torch.Tensor) -> torch.Tensor:
    """Greedy next token; EOS is masked for samples that have not yet produced min_new_tokens (HF MinNewTokens)."""
    logits = logits[:, : vocab_size].float()
    if bool(suppress_eos.any()):
        logits[suppress_eos, eos_id] = float("-inf")
    return logits.argmax(-1)


@torch.no_grad()
def generate_batch(model, vocab_size: int, prompts: list[list[int]], max_new_tokens: int, eos_id: int,
                   min_new_tokens: int = 1) -> list[list[int]]:
    """Greedy continuations of `prompts` with the KV cache; each ends at its first EOS or after max_new_tokens."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    lengths = [len(p) for p in prompts]
    total = max(lengths) + max_new_tokens
    seqs = torch.zeros(len(prompts), total, dtype=torch.long, device=device)
    for row, ids in enumerate(prompts):
        seqs[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths_t = torch.tensor(lengths, device=device)
    context = _new_context(model, len(prompts), total, dtype, device)
    active = torch.arange(len(prompts), device=device)  # original rows still generating, in cache order
    outputs: list[list[int]] = [[] for _ in prompts]
    pos = min(lengths)
    logits = _forward(model, seqs[:, :pos], 0, context)[:, -1]
    context.sequence_len_offset = pos
    while True:
        produced = pos - lengths_t[active]  # tokens generated so far (negative: still inside the prompt)
        choice = _pick(logits, vocab_size, eos_id, (produced >= 0) & (produced < min_new_tokens))
        in_prompt = produced < 0
        token = torch.where(in_prompt, seqs[active, pos], choice)
        seqs[active, pos] = token
        done = torch.zeros_like(in_prompt)
        for k in (~in_prompt).nonzero().flatten().tolist():
            row = int(active[k])
            outputs[row].append(int(token[k]))
            done[k] = int(token[k]) == eos_id or len(outputs[row]) >= max_new_tokens
        if bool(done.all()):
            return outputs
        if bool(done.any()):
            keep = (~done).nonzero().flatten()
            _keep_rows(context, keep)
            active = active[keep]
            token = token[keep]
        logits = _forward(model, token.unsqueeze(1), pos, context)[:, -1]
        pos += 1
        context.sequence_len_offset = pos


@torch.no_grad()
def generate_uncached(model, vocab_size: int, prompt: list[int], max_new_tokens: int, eos_id: int,
                      min_new_tokens: int = 1) -> list[int]:
    """The same greedy rule re-running the whole sequence every step (no cache, batch 1): the test oracle."""
    device = next(model.parameters()).device
    seq = torch.tensor([prompt], dtype=torch.long, device=device)
    out: list[int] = []
    while len(out) < max_new_tokens:
        logits = _forward(model, seq, 0)[:, -1]
        token = int(_pick(logits, vocab_size, eos_id, torch.tensor([len(out) < min_new_tokens], device=device))[0])
        out.append(token)
        if token == eos_id:
            break
        seq = torch.cat([seq, torch.tensor([[token]], device=device)], dim=1)
    return out
