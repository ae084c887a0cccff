"""Schedules and counts from the MLPerf references, checked against the numbers the references publish."""
from __future__ import annotations

import math

import pytest

from workflow_scripts.model.lora_param_count import lora_trainable_params
from workflow_scripts.train.schedules import (cosine_lr, cosine_with_linear_warmup, llama31_eval_schedule,
                                        llama31_pretrain_schedule, lora_eval_schedule)


def test_lora_70b_trainable_parameters():
    # mlperf-spec §1.7: r 16 on qkv and o of Llama 2 70B -> 557,056 per layer x 80 layers.
    assert lora_trainable_params(80, 8192, 64, 8, 28672, 16, ["linear_qkv", "linear_proj"]) == 44_564_480
    assert lora_trainable_params(1, 8192, 64, 8, 28672, 16, ["linear_qkv"]) == 294_912
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        lora_trainable_params(1, 64, 4, 4, 128, 8, ["q_proj"])


def test_lora_eval_schedule_matches_nvidia_logs():
    gbs8 = lora_eval_schedule(8)
    evals = [s * 8 for s in range(1, 400) if gbs8.is_eval_step(s)]
    assert evals[:3] == [1536, 1920, 2304]  # first evals of the NVIDIA GBS-8 logs
    gbs128 = lora_eval_schedule(128)
    assert [s * 128 for s in range(1, 100) if gbs128.is_eval_step(s)][0] == 7296  # = 19 x 384


def test_lora_cosine():
    assert cosine_lr(0, 4e-4, 1024) == 4e-4
    assert cosine_lr(512, 4e-4, 1024) == pytest.approx(2e-4)
    assert cosine_lr(1024, 4e-4, 1024) == pytest.approx(0.0, abs=1e-12)


def test_llama31_405b_schedule_from_gbs():
    s = llama31_pretrain_schedule(1152)
    assert (s.max_lr, s.warmup_steps, s.max_steps, s.min_lr) == (8e-5, 8000, 1_200_000, 8e-7)
    s2 = llama31_pretrain_schedule(2304)
    assert (s2.max_lr, s2.warmup_steps, s2.max_steps) == (16e-5, 4000, 600_000)
    assert s2.decay_steps == 596_000
    assert llama31_eval_schedule(1152).every_steps == 16 and llama31_eval_schedule(1152).first_step == 224


def test_warmup_then_cosine_to_min():
    assert cosine_with_linear_warmup(0, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    assert cosine_with_linear_warmup(9, 1.0, 0.1, 10, 100) == pytest.approx(1.0)
    assert cosine_with_linear_warmup(60, 1.0, 0.1, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert cosine_with_linear_warmup(500, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
