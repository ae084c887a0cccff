"""Learning-rate and evaluation schedules of the MLPerf references, as pure functions of the step (mlperf-spec §1.7,
§1.8, §2.6, §2.7). Steps are 0-based optimizer steps; samples_count = steps x global batch size."""
from __future__ import annotations

import math
from dataclasses import dataclass


def cosine_lr(step: int, base_lr: float, max_steps: int) -> float:
    """HF `cosine` with no warmup (Llama 2 70B LoRA reference): base_lr * 0.5 * (1 + cos(pi * step / max_steps))."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max_steps))


def cosine_with_linear_warmup(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Megatron/NeMo `CosineAnnealing` with linear warmup: 0 -> max_lr over warmup, then cosine down to min_lr."""
    if warmup_steps and step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(step - warmup_steps, decay_steps) / max(decay_steps, 1)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class PretrainSchedule:
    """Llama 3.1 405B pretraining schedule derived from the global batch size (pretrain_llama31.py)."""

    global_batch_size: int
    max_lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int

    @property
    def decay_steps(self) -> int:
        return self.max_steps - self.warmup_steps


def llama31_pretrain_schedule(global_batch_size: int, base_gbs: int = 1152, base_lr: float = 8e-5) -> PretrainSchedule:
    gbs = global_batch_size
    return PretrainSchedule(
        global_batch_size=gbs,
        max_lr=round(gbs / base_gbs * base_lr, 8),
        min_lr=8e-7,
        warmup_steps=math.ceil(8000 * base_gbs / gbs),
        max_steps=math.ceil(1_200_000 * base_gbs / gbs),
    )


@dataclass(frozen=True)
class EvalSchedule:
    """Evaluate after step s (1-based count of finished steps) when s >= first_step and (s - first_step) % every == 0."""

    every_steps: int
    first_step: int

    def is_eval_step(self, finished_steps: int) -> bool:
        return finished_steps >= self.first_step and (finished_steps - self.first_step) % self.every_steps == 0


def lora_eval_schedule(global_batch_size: int, eval_every_samples: int = 384) -> EvalSchedule:
    """Every 384 samples (CEIL(384/GBS) steps), skipping the first FLOOR(0.125*GBS+2) evaluations (rules l.452).
    GBS 8: every 48 steps, first after 192 steps = 1536 samples; GBS 128: first at 7296 samples."""
    every = math.ceil(eval_every_samples / global_batch_size)
    skipped = math.floor(0.125 * global_batch_size + 2)
    return EvalSchedule(every_steps=every, first_step=(skipped + 1) * every)


def llama31_eval_schedule(global_batch_size: int, eval_every_samples: int = 18432) -> EvalSchedule:
    """Every CEIL(18432/GBS) steps; first at eval_every*FLOOR(0.0026*GBS+12)/GBS steps as the reference code computes
    it (224 steps at GBS 1152; the rule text would give one evaluation later, see mlperf-spec §7.5)."""
    every = math.ceil(eval_every_samples / global_batch_size)
    first = math.ceil(eval_every_samples * math.floor(0.0026 * global_batch_size + 12) / global_batch_size)
    return EvalSchedule(every_steps=every, first_step=first)
