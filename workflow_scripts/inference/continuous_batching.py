"""Continuous batching of greedy generation over decode_engine.py's cache, prefill and decode step.

A fixed number of slots decode together; each slot holds one sample from its prefill until it ends (EOS or
max_new_tokens), and then the next prompt in line takes the slot, by one prefill for all slots freed at once, into
their rows of the cache. The Offline scenario allows any batching, and OpenOrca's outputs range from a few tokens to
1,024, so a static batch idles on its longest (benchmarks/generate_continuous_batching.py measures the difference).

The host never waits on the GPU per token: the greedy choice stays on the device, and only every `CHECK_EVERY` steps
(and at the step a slot reaches max_new_tokens, which the host knows) one flag per slot is read: finished samples are
harvested and their slots refilled. Once no prompt is left and at most half the slots live, the cache shrinks to them.
"""
from __future__ import annotations

from typing import Iterator

import torch

from workflow_scripts.inference import decode_engine as engine  # by module: tests and benchmarks patch its parts

CHECK_EVERY = 16  # steps between the host's reads of the finished flags (the only host waits of a decode)


def _greedy(logits: torch.Tensor, vocab_size: int, eos_id: int, suppress_eos: torch.Tensor) -> torch.Tensor:
    """Argmax of each row; rows where `suppress_eos` [b] (fewer than min_new_tokens so far) cannot pick EOS."""
    logits = logits[:, :vocab_size].float()
    logits[:, eos_id] = logits[:, eos_id].masked_fill(suppress_eos, float("-inf"))
    return logits.argmax(-1)


def trim(row: list[int], eos_id: int) -> list[int]:
    """A row's tokens up to and including its first EOS (tokens after it were computed but are not output)."""
    return row[: row.index(eos_id) + 1] if eos_id in row else row


class Slots:
    """The decode batch: a fixed number of cache slots, each holding one sample from its prefill until it is
    harvested. On the device, per slot: the left padding, the position its prompt ends at, the tokens generated
    (frozen once finished), whether it has produced EOS or reached max_new_tokens, and its output tokens (column
    max_new_tokens takes the writes of capped rows). A free slot attends to position 0 of its row alone, so it costs
    no KV reads. On the host: each slot's sample (-1: free) and the host step it was filled at, from which an upper
    bound of its generated tokens follows without reading the device."""

    def __init__(self, count: int, max_new_tokens: int, device: torch.device):
        self.max_new = max_new_tokens
        zeros = dict(dtype=torch.long, device=device)
        self.pad, self.start, self.steps = (torch.zeros(count, **zeros), torch.zeros(count, **zeros),
                                            torch.ones(count, **zeros))
        self.finished = torch.ones(count, dtype=torch.bool, device=device)
        self.out = torch.full((count, max_new_tokens + 1), -1, **zeros)
        self.token = torch.zeros(count, **zeros)
        self.rows = torch.arange(count, device=device)
        self.sample = [-1] * count
        self.born = [0] * count
        self.prompt_end = [1] * count

    def positions(self) -> torch.Tensor:
        """Each slot's next cache position (a free slot's is 0)."""
        return self.start + self.steps - 1

    def record(self, token: torch.Tensor, eos_id: int) -> None:
        """The slots' next tokens: written at each slot's count, which then grows by one unless it had finished."""
        self.token = token
        self.out[self.rows, self.steps] = token
        self.steps += ~self.finished
        self.finished |= (token == eos_id) | (self.steps >= self.max_new)

    def free(self, slots: list[int]) -> None:
        """Harvested slots: free, attending to their position 0 alone until refilled."""
        index = torch.tensor(slots, device=self.pad.device)
        self.pad[index], self.start[index], self.steps[index] = 0, 0, 1
        for slot in slots:
            self.sample[slot] = -1

    def generated(self, slot: int, step: int) -> int:
        """Tokens slot `slot` holds at host step `step` (its prefill gave the first), unless it ended earlier."""
        return min(step - self.born[slot] + 1, self.max_new)

    def furthest(self, step: int) -> int:
        """The largest cache position a slot feeds at host step `step` (for the step's attention length)."""
        return max(end + self.generated(slot, step) - 1 for slot, end in enumerate(self.prompt_end)
                   if self.sample[slot] >= 0)

    def keep(self, keep: list[int]) -> None:
        """Only the slots `keep` (cache rows are dropped by KVCache.keep alongside)."""
        index = torch.tensor(keep, device=self.pad.device)
        for name in ("pad", "start", "steps", "finished", "out", "token"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.rows = torch.arange(len(keep), device=self.pad.device)
        self.sample = [self.sample[i] for i in keep]
        self.born = [self.born[i] for i in keep]
        self.prompt_end = [self.prompt_end[i] for i in keep]


@torch.no_grad()
def generate_stream(model, vocab_size: int, prompts: list[list[int]], slots: int, max_new_tokens: int, eos_id: int,
                    min_new_tokens: int = 1, check_every: int | None = None) -> Iterator[tuple[int, list[int]]]:
    """Greedy continuations of `prompts` with continuous batching: `slots` rows decode together; at each host check
    (every `check_every` steps, and at the step a slot reaches max_new_tokens) the finished samples are yielded as
    (index into prompts, tokens up to their first EOS) and their slots are refilled with the next prompts, in the
    given order, by one prefill. Once no prompt is left, the slots shrink to the live ones when at most half are
    live (a new graph for the smaller batch). Each sample gets the tokens it would get alone (as generate_batch)."""
    check_every = check_every or CHECK_EVERY
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    count = min(slots, len(prompts))
    positions = engine.cache_positions(max(len(p) for p in prompts), max_new_tokens)
    cache = engine.KVCache(model, count, positions, dtype, device, fp8=engine.KV_CACHE == "fp8")
    rope = engine.RopeTable(model, positions, dtype)
    state = Slots(count, max_new_tokens, device)
    queue = iter(range(len(prompts)))
    queued = len(prompts)
    free = list(range(count))
    decoder = None
    step = checked = 0
    while True:
        taken = list(zip(free, queue))  # zip stops at the free slots' end without taking a prompt more
        if taken:
            _refill(model, vocab_size, prompts, taken, state, cache, rope, step, eos_id, min_new_tokens)
            queued -= len(taken)
        live = [slot for slot, sample in enumerate(state.sample) if sample >= 0]
        if not live:
            return
        while step - checked < check_every and all(state.generated(s, step) < max_new_tokens for s in live):
            decoder = decoder or engine.Decoder(model, state.pad, cache, rope, state.token)
            logits = decoder(state.token, state.positions(), state.furthest(step))
            state.record(_greedy(logits, vocab_size, eos_id, state.steps < min_new_tokens), eos_id)
            step += 1
        checked = step
        finished = state.finished.tolist()  # the one host read per check
        done = [slot for slot in live if finished[slot]]
        if done:
            rows = state.out[torch.tensor(done, device=device)].tolist()
            for slot, row in zip(done, rows):
                yield state.sample[slot], trim(row[:state.generated(slot, step)], eos_id)
            state.free(done)
        free = [slot for slot, sample in enumerate(state.sample) if sample < 0]
        if not queued and len(free) < len(state.sample) and 2 * len(free) >= len(state.sample):
            keep = [slot for slot, sample in enumerate(state.sample) if sample >= 0]  # nothing to refill with
            state.keep(keep)
            cache.keep(torch.tensor(keep, device=device))
            decoder, free = None, []


def _refill(model, vocab_size: int, prompts: list[list[int]], taken: list[tuple[int, int]], state: Slots,
            cache: engine.KVCache, rope: engine.RopeTable, step: int, eos_id: int, min_new_tokens: int) -> None:
    """Prefill the prompts of `taken` [(slot, index into prompts)] into their slots and record each one's first
    token. The slots' device state is written in place: the captured graphs read it."""
    slots = [slot for slot, _ in taken]
    index = torch.tensor(slots, device=state.pad.device)
    tokens, pad = engine.left_pad([prompts[i] for _, i in taken], state.pad.device)
    logits = engine.prefill(model, tokens, pad, cache, rope, index)
    first = _greedy(logits, vocab_size, eos_id, torch.full_like(pad, min_new_tokens > 0, dtype=torch.bool))
    state.pad[index] = pad
    state.start[index] = tokens.shape[1]
    state.out[index, 0] = first
    state.steps[index] = 1
    state.finished[index] = (first == eos_id) | (state.max_new <= 1)
    state.token[index] = first
    for slot, sample in taken:
        state.sample[slot], state.born[slot], state.prompt_end[slot] = sample, step, tokens.shape[1]


def generate_batch_fast(model, vocab_size: int, prompts: list[list[int]], max_new_tokens: int, eos_id: int,
                        min_new_tokens: int = 1, check_every: int | None = None) -> list[list[int]]:
    """Greedy continuations of one batch of `prompts` (as generate_batch): generate_stream with a slot per prompt."""
    outputs: list[list[int]] = [[] for _ in prompts]
    for index, ids in generate_stream(model, vocab_size, prompts, len(prompts), max_new_tokens, eos_id,
                                      min_new_tokens, check_every):
        outputs[index] = ids
    return outputs


WARM_UP_PROMPT = 16  # tokens of each warm-up prompt (shapes differ from the run's; kernels and libraries do not)


def warm_up(model, vocab_size: int, eos_id: int, rows: int = 2) -> None:
    """Run `rows` short dummy prompts for two tokens through the engine before the timed run, so that what a
    process does once (Triton compiles its kernels, cuBLAS and the attention libraries choose and load theirs, the
    first CUDA graph is captured) is not charged to the first batch of the run. MLPerf's Offline scenario times
    from LoadGen's query, and a SUT may warm up before it; generate.py logs and records the seconds this took."""
    prompt = [3 + i % (vocab_size - 3) for i in range(WARM_UP_PROMPT)]
    for _ in generate_stream(model, vocab_size, [prompt] * rows, rows, 2, eos_id, min_new_tokens=2):
        pass
