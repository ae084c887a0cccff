"""MLPerf result logs written through the official `mlperf_logging.mllog`, one log file per run.

`LoraRunLog` emits exactly the keys the llama2_70b_lora rules require (mlperf-spec §1.9, §1.10), in NVIDIA's order:
submission_*, hyperparameters, init_stop, run_start, blocks with train_loss, evals, run_stop.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog.mllog import MLLogger


def _file_logger(path: Path) -> logging.Logger:
    """A private logging.Logger writing bare lines to `path` (mllog's shared logger is a process-wide singleton)."""
    logger = logging.getLogger(f"mlperf_log.{path.resolve()}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


class MLPerfLog:
    """Thin wrapper over mllog.MLLogger bound to one file. `close()` flushes and releases it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._logger = _file_logger(self.path)
        self._mllog = MLLogger(logger=self._logger, default_stack_offset=2)

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        self._mllog.event(key, value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        self._mllog.start(key, value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        self._mllog.end(key, value, metadata=metadata or None)

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)


@dataclass(frozen=True)
class Submission:
    """Who ran what, where (submission_* keys). Defaults fit a local demo run."""

    org: str = "mlperf-llm-pipeline"
    platform: str = "cpu-demo"
    division: str = "closed"
    status: str = "onprem"
    poc_name: str = ""
    poc_email: str = ""


@dataclass(frozen=True)
class Disclosure:
    """The keys ruleset 6.1.0 requires of every training log: lowest precision per part and the parallel layout."""

    precision_linear: str = "fp32"
    precision_attn: str = "fp32"
    precision_comm: str = "fp32"
    tensor_parallelism: int = 1
    pipeline_parallelism: int = 1
    context_parallelism: int = 1
    expert_parallelism: int = 1
    micro_batch_size: int = 1
    config_filename: str = ""

    @classmethod
    def from_config(cls, cfg, attention_fp8: bool) -> "Disclosure":
        """fp8 runs keep bf16 communication, and bf16 attention where FP8 attention is off."""
        precision = {"fp32": "fp32", "bf16": "bfloat16", "fp8": "fp8"}[cfg.precision]
        fp8 = cfg.precision == "fp8"
        return cls(precision_linear=precision, precision_attn="bfloat16" if fp8 and not attention_fp8 else precision,
                   precision_comm="bfloat16" if fp8 else precision, tensor_parallelism=cfg.tensor_parallel,
                   pipeline_parallelism=cfg.pipeline_parallel, micro_batch_size=cfg.micro_batch_size,
                   config_filename=cfg.recipe)

    def log(self, run_log: "MLPerfLog") -> None:
        run_log.event("lowest_numerical_precision_in_linear", self.precision_linear)
        run_log.event("lowest_numerical_precision_in_attn", self.precision_attn)
        run_log.event("lowest_numerical_precision_in_comm", self.precision_comm)
        run_log.event("tensor_parallelism", self.tensor_parallelism)
        run_log.event("pipeline_parallelism", self.pipeline_parallelism)
        run_log.event("context_parallelism", self.context_parallelism)
        run_log.event("expert_parallelism", self.expert_parallelism)
        run_log.event("micro_batch_size", self.micro_batch_size)
        run_log.event("config_filename", self.config_filename)


@dataclass(frozen=True)
class LoraHyperparameters:
    global_batch_size: int
    learning_rate: float
    training_steps: int
    weight_decay: float
    gradient_clip_norm: float
    lora_rank: int
    lora_alpha: float
    gradient_accumulation_steps: int
    train_samples: int
    eval_samples: int
    seed: int
    config_filename: str
    warmup_factor: float = 0.0
    # Disclosure keys that ruleset 6.1.0 requires: lowest precision per part and the parallel layout.
    precision_linear: str = "fp32"
    precision_attn: str = "fp32"
    precision_comm: str = "fp32"
    tensor_parallelism: int = 1
    pipeline_parallelism: int = 1
    context_parallelism: int = 1
    expert_parallelism: int = 1
    micro_batch_size: int = 1


class RunLog(MLPerfLog):
    """The part of a training log every benchmark shares; samples_count = global step x GBS."""

    benchmark = ""

    def _header(self, submission: Submission) -> None:
        self.event(C.CACHE_CLEAR, True)
        self.start(C.INIT_START)
        self.event(C.SUBMISSION_BENCHMARK, self.benchmark)
        self.event(C.SUBMISSION_ORG, submission.org)
        self.event(C.SUBMISSION_DIVISION, submission.division)
        self.event(C.SUBMISSION_STATUS, submission.status)
        self.event(C.SUBMISSION_PLATFORM, submission.platform)
        if submission.poc_name:
            self.event(C.SUBMISSION_POC_NAME, submission.poc_name)
        if submission.poc_email:
            self.event(C.SUBMISSION_POC_EMAIL, submission.poc_email)

    def run_start(self) -> None:
        self.end(C.INIT_STOP)
        self.start(C.RUN_START)

    def block_start(self, samples_count: int) -> None:
        self.start(C.BLOCK_START, samples_count=samples_count)

    def train_loss(self, loss: float, samples_count: int, lr: float) -> None:
        self.event("train_loss", loss, samples_count=samples_count, lr=lr)

    def evaluation(self, eval_loss: float, samples_count: int) -> None:
        """block_stop, eval_start, eval_accuracy, eval_stop (NVIDIA v5.0 order)."""
        self.end(C.BLOCK_STOP, samples_count=samples_count)
        self.start(C.EVAL_START, samples_count=samples_count)
        self.event(C.EVAL_ACCURACY, eval_loss, samples_count=samples_count)
        self.end(C.EVAL_STOP, samples_count=samples_count)

    def run_stop(self, samples_count: int, success: bool) -> None:
        self.end(C.RUN_STOP, samples_count=samples_count, status=C.SUCCESS if success else C.ABORTED)


class LoraRunLog(RunLog):
    """llama2_70b_lora (mlperf-spec §1.9)."""

    benchmark = "llama2_70b_lora"

    def init(self, submission: Submission, hp: LoraHyperparameters) -> None:
        self._header(submission)
        self.event(C.OPT_BASE_LR, hp.learning_rate)
        self.event(C.OPT_ADAMW_WEIGHT_DECAY, hp.weight_decay)
        self.event(C.OPT_GRADIENT_CLIP_NORM, hp.gradient_clip_norm)
        self.event(C.OPT_LR_WARMUP_FACTOR, hp.warmup_factor)
        self.event("lora_rank", hp.lora_rank)
        self.event(C.LORA_ALPHA, hp.lora_alpha)
        self.event(C.OPT_LR_TRAINING_STEPS, hp.training_steps)
        self.event(C.GLOBAL_BATCH_SIZE, hp.global_batch_size)
        self.event(C.TRAIN_SAMPLES, hp.train_samples)
        self.event(C.EVAL_SAMPLES, hp.eval_samples)
        self.event(C.GRADIENT_ACCUMULATION_STEPS, hp.gradient_accumulation_steps)
        self.event(C.SEED, hp.seed)
        Disclosure(**{f.name: getattr(hp, f.name) for f in fields(Disclosure)}).log(self)


@dataclass(frozen=True)
class PretrainHyperparameters:
    global_batch_size: int
    max_sequence_length: int
    learning_rate: float
    end_learning_rate: float
    warmup_steps: int
    decay_steps: int
    beta1: float
    beta2: float
    epsilon: float
    weight_decay: float
    gradient_clip_norm: float
    gradient_accumulation_steps: int
    eval_samples: int
    seed: int
    max_steps: int
    init_checkpoint_step: int = 0
    disclosure: Disclosure = Disclosure()

    @classmethod
    def from_config(cls, cfg, gradient_accumulation_steps: int, eval_samples: int,
                    attention_fp8: bool = False) -> "PretrainHyperparameters":
        """The logged values of a pretraining TrainConfig (decay over max_steps - warmup, as the reference)."""
        return cls(global_batch_size=cfg.global_batch_size, max_sequence_length=cfg.seq_length, learning_rate=cfg.lr,
                   end_learning_rate=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                   decay_steps=cfg.max_steps - cfg.warmup_steps, beta1=cfg.adam_beta1, beta2=cfg.adam_beta2,
                   epsilon=cfg.adam_eps, weight_decay=cfg.weight_decay, gradient_clip_norm=cfg.clip_grad,
                   gradient_accumulation_steps=gradient_accumulation_steps, eval_samples=eval_samples, seed=cfg.seed,
                   max_steps=cfg.max_steps, disclosure=Disclosure.from_config(cfg, attention_fp8))


class PretrainRunLog(RunLog):
    """llama31_405b and llama31_8b (mlperf-spec §2.10): the reference's MLPerfCallback keys."""

    benchmark = "llama31_405b"

    def init(self, submission: Submission, hp: PretrainHyperparameters) -> None:
        self._header(submission)
        self.event(C.GLOBAL_BATCH_SIZE, hp.global_batch_size)
        self.event(C.GRADIENT_ACCUMULATION_STEPS, hp.gradient_accumulation_steps)
        self.event("max_sequence_length", hp.max_sequence_length)
        self.event(C.EVAL_SAMPLES, hp.eval_samples)
        self.event(C.OPT_NAME, "adamw")
        self.event(C.OPT_BASE_LR, hp.learning_rate)
        self.event(C.OPT_ADAMW_BETA_1, hp.beta1)
        self.event(C.OPT_ADAMW_BETA_2, hp.beta2)
        self.event(C.OPT_ADAMW_EPSILON, hp.epsilon)
        self.event(C.OPT_ADAMW_WEIGHT_DECAY, hp.weight_decay)
        self.event(C.OPT_GRADIENT_CLIP_NORM, hp.gradient_clip_norm)
        self.event(C.OPT_END_LR, hp.end_learning_rate)
        self.event(C.OPT_LR_WARMUP_STEPS, hp.warmup_steps)
        self.event("opt_learning_rate_decay_steps", hp.decay_steps)
        self.event("opt_learning_rate_decay_schedule", "cosine with linear warmup")
        self.event("max_steps", hp.max_steps)  # llama31_8b checks it (the schedule's length)
        self.event(C.SEED, hp.seed)
        self.event("init_checkpoint_step", hp.init_checkpoint_step)
        hp.disclosure.log(self)

    def run_stop(self, samples_count: int, success: bool) -> None:
        super().run_stop(samples_count, success)
        self.event(C.TRAIN_SAMPLES, samples_count)
