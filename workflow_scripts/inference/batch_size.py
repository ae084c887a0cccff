"""The generation batch size: a number, or `auto` = the most rows whose KV cache fits the GPU after the model.

Decoding reads every weight once per step whatever the batch, so rows are nearly free until the KV cache's reads
dominate; the limit is memory. `auto` gives the cache KV_SHARE of the memory free after loading (the rest holds the
prefill's activations and the allocator's slack), at most MAX_ROWS rows. On CPU, where a step's cost grows with its
rows, `auto` is CPU_ROWS. Under tensor parallelism every rank must run the same batches: the smallest rank's count
is taken (one all-reduce).
"""
from __future__ import annotations

import argparse

import torch

from workflow_scripts.inference import kv_fp8

AUTO = "auto"
KV_SHARE = 0.85  # the rest (15%) holds the prefill chunk's activations and the allocator's slack: 7B at batch 176 ran on the H200
MAX_ROWS = 256
CPU_ROWS = 8


def parse_batch_size(text: str) -> int | str:
    """argparse type of --batch-size: a positive integer or 'auto'."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', got {text!r}")
    return value


def kv_bytes_per_row(model, positions: int, fp8: bool = False) -> int:
    """Bytes of this rank's KV cache for one row of `positions` positions (every layer, keys and values), in the
    model's dtype or as fp8 codes and scales (kv_fp8.py)."""
    dtype_bytes = next(model.parameters()).element_size()
    total = 0
    for layer in model.decoder.layers:
        attention = layer.self_attention
        dims = (attention.key_hidden_size, attention.val_hidden_size)
        per_group = sum(kv_fp8.bytes_per_vector(d) for d in dims) if fp8 else sum(dims) * dtype_bytes
        total += attention.num_query_groups_per_partition * per_group
    return total * positions


def auto_rows(model, positions: int, fp8: bool = False) -> int:
    """`auto` for this rank (before the agreement across ranks)."""
    if not torch.cuda.is_available():
        return CPU_ROWS
    torch.cuda.empty_cache()  # the loader's cached blocks would count as used
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(MAX_ROWS, int(KV_SHARE * free // kv_bytes_per_row(model, positions, fp8))))


def resolve_batch_size(requested: int | str, model, positions: int, fp8: bool = False) -> int:
    """The batch size to run: `requested` when a number, else auto_rows agreed over the job's ranks (collective)."""
    if requested != AUTO:
        return int(requested)
    rows = auto_rows(model, positions, fp8)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        count = torch.tensor([rows], device=device)
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
        rows = int(count.item())
    return rows
