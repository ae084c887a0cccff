"""Greedy decoding's model-level steps over a megatron-core GPTModel's own modules: a KV cache of fixed shape, a
one-pass prefill into any of its rows, and a decode step replayed as CUDA graphs. continuous_batching.py schedules
samples onto them.

Why not megatron's StaticInferenceContext (generate.py's `generate_batch`, kept as the reference path): it stores keys
unrotated and re-rotates the whole cached key tensor on every step, grows the attention's key length by one each step
(Transformer Engine then re-chooses its attention backend every step), can only prefill a batch up to its shortest
prompt, and runs a batch until its longest output ends. Here:

- prompts are left-padded to their batch's longest and prefilled in one pass (row chunks bound the activations),
  right-aligned so that causal attention needs no padding mask, into any rows of the cache (`prefill`);
- RoPE is applied once per token at the row's own position (the pad is subtracted), and the cache holds rotated keys;
  on a GPU one in-place Triton kernel per tensor rotates them (rope_triton.py), elsewhere torch's elementwise ops;
- the cache is [rows, kv groups, positions, head dim] per layer, allocated once per run; each step writes one
  position per row (at device-side indices, each row at its own) and attends to the cache up to the furthest row's
  position rounded up to KV_BLOCK, masked per row (left padding, positions not yet written), so a run has a few step
  shapes with inputs in fixed buffers: on a GPU each shape is captured once as a CUDA graph and replayed (`Decoder`);
- decode attention (one query per head) is, on a GPU, a split-KV Triton kernel that reads only each row's written
  positions, so one CUDA graph serves the whole run (decode_attention_triton.py); elsewhere (or `DECODE_ATTENTION`
  "matmul") two batched matmuls over the masked KV block; the prefill uses torch's scaled_dot_product_attention;
- GQA in decode runs a group's query heads as rows against that group's keys, so no key is copied;
- the prefill runs batch-major, so flash attention and the cache writes read the projections' own layout, and on a
  GPU the MLP's SwiGLU is one Triton kernel between its own fc1 and fc2 (swiglu_triton.py).

Every module it calls is the model's own (embedding, fused norm + QKV, output projection, MLP, final norm, output
layer, with their tensor-parallel collectives), so TP runs as the model was built. Greedy tokens equal the reference
path's (tests/test_generate.py compares them for every sample on CPU in fp32).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from workflow_scripts.inference import decode_attention_triton, kv_fp8, rope_triton, swiglu_triton

log = logging.getLogger("generate")
KV_BLOCK = 64  # a decode step attends to whole blocks of cache positions: few step shapes, each one CUDA graph
CUDA_GRAPHS = True  # decode steps on a GPU replay captured graphs (generate.py --cuda-graphs off: eager launches)
# "auto" (default: triton on a GPU with Triton, else matmul), "matmul", "triton" (decode_attention_triton.py) or "sdpa"
DECODE_ATTENTION = "auto"
ROPE = "auto"  # "auto" (rope_triton.py's kernel on a GPU with Triton, else torch), "torch" or "triton"
# "auto" (swiglu_triton.py's kernel on a GPU with Triton, for megatron's gated SiLU MLP), "module" (the MLP's own
# forward) or "triton"
SWIGLU = "auto"
KV_CACHE = "model"  # the cache's storage: "model" (the model's dtype) or "fp8" (kv_fp8.py; generate.py --kv-cache)
PREFILL_TOKENS = 32768  # prompt tokens per prefill chunk (rows x padded length): bounds the MLP's activations


class KVCache:
    """Rotated keys and values of every layer of this rank: [rows, groups, positions, head_dim], in the model's dtype,
    or with `fp8` as uint8 e4m3 codes plus one fp32 scale per [row, group, position] (kv_fp8.py)."""

    def __init__(self, model, rows: int, positions: int, dtype: torch.dtype, device: torch.device,
                 fp8: bool = False):
        self.dtype, self.fp8 = dtype, fp8
        self.keys, self.values, self.key_scales, self.value_scales = [], [], [], []
        store = kv_fp8.CODE_DTYPE if fp8 else dtype
        for layer in model.decoder.layers:
            attention = layer.self_attention
            groups = attention.num_query_groups_per_partition
            for cache, dim in ((self.keys, attention.key_hidden_size), (self.values, attention.val_hidden_size)):
                cache.append(torch.zeros(rows, groups, positions, dim, dtype=store, device=device))
            if fp8:
                for scales in (self.key_scales, self.value_scales):
                    scales.append(torch.zeros(rows, groups, positions, dtype=kv_fp8.SCALE_DTYPE, device=device))

    def _tensors(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        scales = (self.key_scales[i], self.value_scales[i]) if self.fp8 else (None, None)
        return list(zip((self.keys[i], self.values[i]), scales))

    def write_prompt(self, i: int, key: torch.Tensor, value: torch.Tensor, index: torch.Tensor) -> None:
        """Layer i's keys/values [b, s, groups, d] of a prefill chunk (batch-major, as `prefill` runs it), each
        vector at its flat cache index (index [b * s * groups], _prompt_index): one copy per tensor, which reads the
        QKV projection's own layout (no permuted copy first)."""
        for (cache, scales), new in zip(self._tensors(i), (key, value)):
            if self.fp8:
                kv_fp8.store(new, index, cache, scales)
            else:
                cache.view(-1, cache.shape[-1]).index_copy_(0, index, new.reshape(-1, cache.shape[-1]))

    def write_step(self, i: int, key: torch.Tensor, value: torch.Tensor, index: torch.Tensor) -> None:
        """Layer i's new keys/values [b, groups, 1, d] of a decode step at the flat (row, group, position) indices
        `index` [b * groups] (_write_index)."""
        for (cache, scales), new in zip(self._tensors(i), (key, value)):
            if self.fp8:
                kv_fp8.store(new, index, cache, scales)
            else:
                cache.view(-1, cache.shape[-1]).index_copy_(0, index, new.reshape(-1, cache.shape[-1]))

    def read(self, i: int, length: int, dequantize: bool) -> tuple[torch.Tensor, ...]:
        """Layer i's positions 0..length-1: (keys, values) in the model's dtype (fp8 codes dequantized when
        `dequantize`), or (key codes, value codes, key scales, value scales) of an fp8 cache."""
        keys, values = self.keys[i][:, :, :length], self.values[i][:, :, :length]
        if not self.fp8:
            return keys, values
        scales = self.key_scales[i][:, :, :length], self.value_scales[i][:, :, :length]
        if dequantize:
            return tuple(kv_fp8.dequantize(codes, scale, self.dtype) for codes, scale in zip((keys, values), scales))
        return keys, values, *scales

    def keep(self, keep: torch.Tensor) -> None:
        """Drop finished rows (one layer at a time, so the copy needs one layer's cache of extra memory)."""
        for cache in (self.keys, self.values, self.key_scales, self.value_scales):
            for i, tensor in enumerate(cache):
                cache[i] = tensor.index_select(0, keep)


class RopeTable:
    """cos and sin of the model's rotary angles for positions 0..n-1, cast as megatron's unfused RoPE casts them."""

    def __init__(self, model, positions: int, dtype: torch.dtype):
        angles = model.rotary_pos_emb(positions).reshape(positions, -1)  # [n, rot_dim], fp32
        self.cos, self.sin = torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)

    def at(self, positions: torch.Tensor, batch_major: bool = False):
        """The rotation of [s, rows, heads, dim] tensors (megatron's layout; [rows, s, heads, dim] if
        `batch_major`) at `positions` [rows, s]: the Triton kernel in place, or the torch form."""
        if rope_kind(positions.device) == "triton":
            if batch_major:
                return lambda t: rope_triton.rotate_(t.transpose(0, 1), self.cos, self.sin, positions).transpose(0, 1)
            return lambda t: rope_triton.rotate_(t, self.cos, self.sin, positions)
        cos, sin = self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)  # [rows, s, 1, rot_dim]
        if not batch_major:
            cos, sin = cos.transpose(0, 1), sin.transpose(0, 1)
        return lambda t: _rotate(t, cos, sin)


def rope_kind(device: torch.device) -> str:
    """ROPE with "auto" resolved for `device`."""
    if ROPE != "auto":
        return ROPE
    return "triton" if rope_triton.available(device) else "torch"


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Non-interleaved RoPE (megatron's _apply_rotary_pos_emb_bshd, Llama's rotate_half) over the whole head dim."""
    x1, x2 = t.chunk(2, dim=-1)
    return t * cos + torch.cat((-x2, x1), dim=-1) * sin


def _decode_scores(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One query row per head against [b, groups, L, d]: two batched matmuls that read the keys and the values
    once each (the fused attention kernels tile 32-64 query rows, and a decode step has one), softmax in fp32."""
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(values.dtype)
    return torch.matmul(probs, values)


def decode_attention_kind(device: torch.device) -> str:
    """DECODE_ATTENTION with "auto" resolved for `device`."""
    if DECODE_ATTENTION != "auto":
        return DECODE_ATTENTION
    return "triton" if decode_attention_triton.available(device) else "matmul"


def _attend(query: torch.Tensor, kv: tuple[torch.Tensor, ...],
            mask: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A decode step's query [1, b, heads, d] against kv = (keys, values) [b, groups, L, d] (for the Triton kernel
    over an fp8 cache: codes and scales, KVCache.read) under mask [b, 1, 1, L] (or, for the Triton kernel, each
    row's span as (pad [b], pos [b])) -> [1, b, heads*d]. A group's query heads become rows against its keys (no
    copy of the cache for GQA)."""
    _, b, heads, d = query.shape
    keys, values = kv[:2]
    q = query.reshape(b, keys.shape[1], heads // keys.shape[1], d)
    if isinstance(mask, tuple):
        out = decode_attention_triton.decode_attention(q, keys, values, *mask, *kv[2:])
    elif DECODE_ATTENTION == "sdpa":
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    else:  # matmul, or auto without Triton
        out = _decode_scores(q, keys, values, mask)
    return out.reshape(1, b, heads * d)


def _attend_prompt(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A prefill chunk's queries [b, s, heads, d] causally against its own right-aligned keys/values
    [b, s, groups, d] -> [b, s, heads*d]. Batch-major, the flash kernel reads the projections and writes its
    output in the layout the next projection takes, so no permuted copy is made."""
    b, s, heads, d = query.shape
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    if k.shape[1] != heads:
        k, v = (t.repeat_interleave(heads // k.shape[1], dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, heads * d)


def _layer(layer, hidden: torch.Tensor, cache: KVCache, i: int, rope, index: torch.Tensor, length: int,
           mask) -> torch.Tensor:
    """Transformer layer i.

    Decode (`hidden` [1, b, h]): `index` [b * groups] are the flat cache indices of each row's new keys/values
    (decode_step's `_write_index`: on the device, so a captured graph replays any step); they attend to positions
    0..length-1 under `mask`. Prefill (mask None; `hidden` batch-major [b, s, h]: the model's modules take any two
    leading dims): `index` [b * s * groups] places each key/value (_prompt_index); attention is causal within the
    chunk, on its own keys (before any fp8 rounding)."""
    attention = layer.self_attention
    query, key, value = attention.get_query_key_value_tensors(layer.input_layernorm(hidden), None)
    query, key = rope(query), rope(key)
    if mask is None:
        cache.write_prompt(i, key, value, index)
        attended = _attend_prompt(query, key, value)
    else:
        cache.write_step(i, key.permute(1, 2, 0, 3), value.permute(1, 2, 0, 3), index)
        attended = _attend(query, cache.read(i, length, dequantize=not isinstance(mask, tuple)), mask)
    out, _ = attention.linear_proj(attended)
    hidden = hidden + out
    return hidden + _mlp(layer.mlp, layer.pre_mlp_layernorm(hidden))


def swiglu_kind(device: torch.device, mlp) -> str:
    """SWIGLU with "auto" resolved for `device` and this MLP: the kernel only for megatron's plain MLP with a gated
    SiLU and no biases (any other MLP runs its own forward)."""
    if SWIGLU != "auto":
        return SWIGLU
    plain = (type(mlp).__name__ == "MLP" and mlp.config.gated_linear_unit and mlp.activation_func is F.silu
             and not mlp.config.add_bias_linear)
    return "triton" if plain and swiglu_triton.available(device) else "module"


def _mlp(mlp, hidden: torch.Tensor) -> torch.Tensor:
    """The MLP's output for `hidden`: fc1, SwiGLU, fc2 (its own modules, with their tensor-parallel collectives),
    the activation as one Triton kernel (swiglu_kind), or the module's forward."""
    if swiglu_kind(hidden.device, mlp) != "triton":
        return mlp(hidden)[0]
    gated, _ = mlp.linear_fc1(hidden)
    return mlp.linear_fc2(swiglu_triton.swiglu(gated))[0]


def _logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Gathered logits [b, v] of the last position of `hidden` [s, b, h]."""
    hidden = model.decoder.final_layernorm(hidden[-1:])
    logits, _ = model.output_layer(hidden, runtime_gather_output=True)
    return logits[0]


def prefill(model, tokens: torch.Tensor, pad: torch.Tensor, cache: KVCache, rope: RopeTable,
            rows: torch.Tensor | slice | None = None) -> torch.Tensor:
    """Run the left-padded prompts [b, P] through the model, filling positions 0..P-1 of cache rows `rows` (an
    index tensor [b], or a slice; default 0..b-1) left-aligned, as the decode steps read them; logits [b, v] of
    the last prompt token.

    The rows run right-aligned (prompt first, its padding after), so plain causal attention is exact for every
    prompt token and needs no mask: torch's flash kernel, which skips the masked half, where a padding mask would
    force the memory-efficient one. Position j goes to cache slot (j + pad) mod P, so the pad tokens' keys land in
    the row's masked left padding. Each chunk runs batch-major ([b, s, h]), so attention and the cache writes read
    the projections' own layout (no permuted copies)."""
    count, length = tokens.shape
    rows = slice(0, count) if rows is None else rows
    if isinstance(rows, slice):
        rows = torch.arange(rows.start, rows.stop, device=tokens.device)
    ar = torch.arange(length, device=tokens.device)
    chunk = max(1, PREFILL_TOKENS // length)
    out = []
    for r0 in range(0, count, chunk):
        part, part_pad = tokens[r0:r0 + chunk], pad[r0:r0 + chunk]
        slots = (ar[None, :] + part_pad[:, None]) % length  # right-aligned position j <- left-aligned column slot
        positions = ar[None, :].expand(len(part), length)
        hidden = model.embedding(input_ids=part.gather(1, slots), position_ids=positions).transpose(0, 1).contiguous()
        index = _prompt_index(cache.keys[0], rows[r0:r0 + chunk], slots)
        rotate = rope.at(positions, batch_major=True)
        for i, layer in enumerate(model.decoder.layers):
            hidden = _layer(layer, hidden, cache, i, rotate, index, length, None)
        last = hidden[torch.arange(len(part), device=hidden.device), length - 1 - part_pad]
        out.append(_logits(model, last.unsqueeze(0)))
    return torch.cat(out)


def decode_step(model, token: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor, cache: KVCache,
                rope: RopeTable, length: int) -> torch.Tensor:
    """Feed `token` [b] at each row's cache position `pos` [b] (on the device) attending to positions
    0..length-1; logits [b, v]. Keys of a row's left padding and of positions after its `pos` are masked."""
    if decode_attention_kind(token.device) == "triton":
        mask = (pad, pos)  # the kernel reads each row's span itself
    else:
        ar = torch.arange(length, device=token.device)
        mask = ((ar[None, :] >= pad[:, None]) & (ar[None, :] <= pos[:, None]))[:, None, None, :]
    positions = (pos - pad)[:, None]
    hidden = model.embedding(input_ids=token[:, None], position_ids=positions)
    rotate = rope.at(positions)
    index = _write_index(cache.keys[0], pos)
    for i, layer in enumerate(model.decoder.layers):
        hidden = _layer(layer, hidden, cache, i, rotate, index, length, mask)
    return _logits(model, hidden)


def _flat_index(cache: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Flat indices [len(rows), groups, s] of (rows[r], group, positions[r, j]) in a contiguous cache
    [rows, groups, positions, d] viewed as [-1, d] (its scales [rows, groups, positions] as [-1])."""
    _, groups, total, _ = cache.shape
    base = (rows[:, None] * groups + torch.arange(groups, device=rows.device)) * total
    return base[:, :, None] + positions[:, None, :]


def _prompt_index(cache: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Flat indices [b * s * groups] of a prefill chunk's keys/values in their batch-major order [b, s, groups]:
    chunk row r's position j goes to cache row rows[r] at slot slots[r, j] (_flat_index)."""
    return _flat_index(cache, rows, slots).transpose(1, 2).reshape(-1)


def _write_index(cache: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Flat indices [b * groups] of (row, group, pos[row]) for every row of `cache` (_flat_index): one index_copy_
    per tensor writes every row's new key at its own position."""
    rows = torch.arange(cache.shape[0], device=pos.device)
    return _flat_index(cache, rows, pos.expand(cache.shape[0])[:, None]).flatten()


class Decoder:
    """decode_step for one set of slots and their cache. A step attends to the cache up to its furthest row's
    position rounded up to KV_BLOCK, so a run has a few step shapes. Eager on CPU; on a GPU each shape is captured
    once as a CUDA graph (all in one memory pool) and replayed (the step's ~1,000 kernel launches from Python took
    longer than the GPU's work). The graphs read `pad` and the cache in place, so refilling slots keeps them valid.
    A warm-up before a capture writes only the cache's last position, which no step reads unmasked (every cache has
    at least one position more than a slot feeds)."""

    def __init__(self, model, pad: torch.Tensor, cache: KVCache, rope: RopeTable, token: torch.Tensor):
        self.args = (model, pad, cache, rope)
        self.total = cache.keys[0].shape[2]
        self.token = token.clone()
        self.pos = torch.full((len(token),), self.total - 1, dtype=torch.long, device=token.device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None
        self.eager = not (token.is_cuda and CUDA_GRAPHS)
        # the Triton kernel stops at each row's position itself: one step shape (and graph) for the whole run
        self.block = self.total if decode_attention_kind(token.device) == "triton" else KV_BLOCK

    def _capture(self, length: int) -> tuple:
        model, pad, cache, rope = self.args
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up: kernels chosen, workspaces made
            decode_step(model, self.token, self.pos, pad, cache, rope, length)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = decode_step(model, self.token, self.pos, pad, cache, rope, length)
        self.pool = graph.pool()
        return graph, logits

    def __call__(self, token: torch.Tensor, pos: torch.Tensor, furthest: int) -> torch.Tensor:
        """Logits of feeding `token` [b] at positions `pos` [b]; `furthest` (host) is max(pos) or more."""
        model, pad, cache, rope = self.args
        length = min(self.total, _round_up(furthest + 1, self.block))
        if not self.eager and length not in self.graphs:
            try:
                self.graphs[length] = self._capture(length)
            except RuntimeError as err:  # an op that cannot be captured: the same steps, launched eagerly
                log.warning("CUDA graph capture failed (%s); decoding eagerly", err)
                self.eager = True
        if self.eager:
            return decode_step(model, token, pos, pad, cache, rope, length)
        graph, logits = self.graphs[length]
        self.token.copy_(token)
        self.pos.copy_(pos)
        graph.replay()
        return logits


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def cache_positions(longest_prompt: int, max_new_tokens: int) -> int:
    """Positions of a cache slot: the longest padded prompt plus the new tokens, in whole KV blocks."""
    return _round_up(_round_up(longest_prompt, 8) + max_new_tokens, KV_BLOCK)


def left_pad(prompts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts right-aligned in [b, longest rounded up to 8] (pad id 0, masked everywhere) and each row's pad count.
    The rounding keeps the cache lengths multiples of 8 (aligned rows for the attention kernels)."""
    longest = _round_up(max(len(p) for p in prompts), 8)
    tokens = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, ids in enumerate(prompts):
        tokens[row, longest - len(ids):] = torch.tensor(ids, dtype=torch.long)
    pad = torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)
    return tokens.to(device), pad.to(device)
