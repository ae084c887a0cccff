"""The trainer of all three training workloads (LoRA fine-tuning, pretraining, SFT throughput) on megatron-core.

CLI (single process, or under torchrun for TP/DP; gloo on CPU, NCCL on GPU):
  python -m workflow_scripts.train --recipe demo_lora_cpu [--overrides F.yaml] --out DIR --ckpt-dir DIR
Writes into DIR: metrics.json (last), mlperf_log.txt, steps.csv, eval.csv, resolved_config.json and the adapter
(LoRA: adapter/) or the final model (pretrain: checkpoint/, a torch_dist folder + model_config.json).
Resumes from the newest complete checkpoint in --ckpt-dir. SIGTERM/SIGUSR1: save a checkpoint, exit with 75.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from workflow_scripts.train import train_checkpoint
from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.progress import Progress
from workflow_scripts.train.schedules import EvalSchedule, cosine_lr, cosine_with_linear_warmup
from workflow_scripts.train.train_config import TrainConfig, build_config
from workflow_scripts.train.train_data import GPTBatches, load_packed, sample_order
from workflow_scripts.train.train_loss import eval_sums, install_token_loss, masked_mean, row_mean, stage_output

log = logging.getLogger("train")
EXIT_PREEMPTED = 75  # the job saved a checkpoint on a signal; the rule's retry resumes it
EXIT_DIVERGED = 3  # a non-finite loss or gradient norm: the run is aborted, never reported as a result
STEP_FIELDS = ["step", "consumed_samples", "loss", "lr", "grad_norm", "tokens_per_s", "step_time_s"]
EVAL_FIELDS = ["step", "samples_count", "eval_loss"]


# ---- model ---------------------------------------------------------------------------------------------------------

def model_config(cfg: TrainConfig):
    """The LlamaConfig the run trains (the checkpoint's, or the recipe's shape for random init), padded for TP."""
    from workflow_scripts.convert.conversion import read_model_config
    from workflow_scripts.model.llama_model import LlamaConfig

    model_cfg = read_model_config(cfg.checkpoint)[0] if cfg.checkpoint else LlamaConfig(**cfg.model_shape)
    return model_cfg.with_padding(cfg.tensor_parallel)


def resolve_recompute(cfg: TrainConfig, dp: int) -> tuple[str, dict[str, Any]]:
    """The recompute mode (cfg's, or for "auto" the cheapest that the memory estimate fits on this GPU; none on CPU)
    and what metrics.json records of the choice."""
    from workflow_scripts.train import train_memory

    layout = train_memory.layout_for(cfg, model_config(cfg), dp)
    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory if on_gpu else None
    mode, est = train_memory.choose(layout, device) if device else ("none", train_memory.estimate(layout))
    if cfg.recompute_activations != "auto":
        mode = cfg.recompute_activations
    if device and est[mode] > device * 0.9:
        log.warning("estimated peak %.1f GiB with recompute %s exceeds 90%% of this GPU's %.1f GiB", est[mode] / 2**30,
                    mode, device / 2**30)
    return mode, {"requested": cfg.recompute_activations, **train_memory.summary(mode, est, device)}


FP8_ATTENTION_MIN_HEAD_DIM = 64  # below it cuDNN has no FP8 attention ("No dot product attention backend", measured)


def fp8_attention(cfg: TrainConfig) -> bool:
    """FP8 attention as configured, except for heads too narrow for cuDNN's kernel (the demo's 16): bf16 there."""
    if not cfg.fp8_attention:
        return False
    head_dim = model_config(cfg).head_dim
    if head_dim < FP8_ATTENTION_MIN_HEAD_DIM:
        log.warning("fp8_attention: head_dim %d < %d has no FP8 attention kernel; attention stays bf16", head_dim,
                    FP8_ATTENTION_MIN_HEAD_DIM)
        return False
    return True


def build_model(cfg: TrainConfig, recompute: str = "none"):
    """GPTModel for this rank: random init (pretraining) or the converted checkpoint (LoRA/SFT), vocab-parallel out."""
    from megatron.core import dist_checkpointing

    from workflow_scripts.model.llama_model import build_gpt_model
    from workflow_scripts.model.lora_layers import apply_lora

    dtype = torch.float32 if cfg.precision == "fp32" else torch.bfloat16
    overrides: dict[str, Any] = {}
    if cfg.precision == "fp8":
        if cfg.spec != "te":
            raise PipelineInputError("train config: precision fp8 needs spec te (Transformer Engine)")
        overrides.update(fp8="hybrid", fp8_recipe=cfg.fp8_recipe, fp8_amax_history_len=cfg.fp8_amax_history_len,
                         fp8_dot_product_attention=fp8_attention(cfg))
    if cfg.sequence_parallel:
        overrides["sequence_parallel"] = True
    if cfg.rope_fusion and cfg.spec == "te":
        overrides["apply_rope_fusion"] = True
    if recompute == "full":
        overrides.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif recompute == "selective":
        overrides.update(recompute_granularity="selective")
    model_cfg = model_config(cfg)
    if cfg.seq_length > model_cfg.max_position_embeddings:
        raise PipelineInputError(f"train config: seq_length {cfg.seq_length} exceeds the model's "
                                 f"max_position_embeddings {model_cfg.max_position_embeddings}")
    model = build_gpt_model(model_cfg, cfg.spec, params_dtype=dtype, parallel_output=True, **overrides)
    if cfg.checkpoint:
        state = dist_checkpointing.load(model.sharded_state_dict(), cfg.checkpoint)
        model.load_state_dict(state)
    vocab_size = cfg.vocab_size
    if cfg.vocab_from_tokenizer:
        from workflow_scripts.data.tokenizer_files import load_tokenizer

        vocab_size = load_tokenizer(cfg.vocab_from_tokenizer).get_vocab_size(with_added_tokens=True)
    if vocab_size > model_cfg.vocab_size:
        model, model_cfg = resize_vocabulary(model, model_cfg, vocab_size, cfg, dtype, overrides)
    if cfg.lora is not None:
        apply_lora(model, cfg.lora, cfg.seed)
    install_token_loss(model, model_cfg.vocab_size)
    return model, model_cfg


def resize_vocabulary(model, model_cfg, vocab_size: int, cfg: TrainConfig, dtype: torch.dtype,
                      overrides: dict[str, Any]):
    """Grow the embedding and output rows to `vocab_size` (new tokens, e.g. ChatML's, added to the tokenizer), as
    transformers 4.40's resize_token_embeddings does: old rows kept, new rows drawn from N(0, 0.02)."""
    import dataclasses

    from megatron.core import parallel_state

    from workflow_scripts.model.llama_model import build_gpt_model

    tp, rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    group = parallel_state.get_tensor_model_parallel_group()
    new_cfg = dataclasses.replace(model_cfg, vocab_size=vocab_size, padded_vocab_size=0).with_padding(tp)
    bigger = build_gpt_model(new_cfg, cfg.spec, params_dtype=dtype, parallel_output=True, **overrides)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(cfg.seed)
    for key in ("embedding.word_embeddings.weight", "output_layer.weight"):
        if key not in state:  # pipeline parallel: the embedding is on the first stage, the output layer on the last
            continue
        shards = [torch.empty_like(state[key]) for _ in range(tp)]
        torch.distributed.all_gather(shards, state[key].contiguous(), group=group)
        old = torch.cat(shards)[: model_cfg.vocab_size]
        grown = torch.zeros(new_cfg.padded_vocab_size, old.shape[1], dtype=old.dtype)
        grown[: model_cfg.vocab_size] = old.cpu()
        added = vocab_size - model_cfg.vocab_size
        grown[model_cfg.vocab_size : vocab_size] = torch.randn(added, old.shape[1], generator=generator) * 0.02
        state[key] = grown.chunk(tp)[rank].to(state[key].device)
    bigger.load_state_dict(state)
    return bigger, new_cfg


# ---- the run -------------------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, ckpt_dir: Path, fingerprint: dict[str, Any] | None = None):
        from megatron.core import parallel_state

        from workflow_scripts.model.lora_layers import trainable_parameters
        from workflow_scripts.train.train_optim import build_optimizer

        self.cfg, self.out, self.ckpt_dir = cfg, out, ckpt_dir
        self.fingerprint = fingerprint
        self.rank = torch.distributed.get_rank()
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.dp = parallel_state.get_data_parallel_world_size()
        self.pp = parallel_state.get_pipeline_model_parallel_world_size()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        if cfg.global_batch_size % (cfg.micro_batch_size * self.dp):
            raise PipelineInputError(f"train config: global_batch_size {cfg.global_batch_size} is not a multiple of "
                                     f"micro_batch_size x data-parallel size ({cfg.micro_batch_size} x {self.dp})")
        self.accum = cfg.global_batch_size // (cfg.micro_batch_size * self.dp)
        self.recompute, self.memory = resolve_recompute(cfg, self.dp)
        log.info("activation recompute: %s (%s)", self.recompute, self.memory)
        self.model, self.model_cfg = build_model(cfg, self.recompute)
        self.params = trainable_parameters(self.model)
        self.model_params = self._stage_sum(sum(p.numel() for p in self.model.parameters()))  # this TP rank's share
        self.megatron_optimizer = cfg.optimizer_impl == "megatron" or (cfg.optimizer_impl == "auto" and
                                                                       self.device.type == "cuda")
        if self.megatron_optimizer:  # GPU: megatron DDP (+ distributed optimizer), fp32 master weights
            from workflow_scripts.train.train_megatron_optim import MegatronOptimizer

            self.optimizer = MegatronOptimizer(self.model, cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2),
                                               cfg.adam_eps, cfg.clip_grad, bf16=cfg.precision != "fp32",
                                               distributed=cfg.distributed_optimizer and self.dp > 1)
        else:  # CPU: torch AdamW with megatron's weight-decay groups, DP all-reduce and TP/PP-aware clipping
            self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2),
                                             cfg.adam_eps)
        self.full_model = cfg.lora is None
        self._load_data()
        every = math.ceil(cfg.eval_every_samples / cfg.global_batch_size)
        self.eval_schedule = EvalSchedule(every_steps=every, first_step=(cfg.skipped_evals + 1) * every)
        self.live = ckpt_dir / "live"
        self.stop_signal: int | None = None

    # data
    def _load_data(self) -> None:
        cfg = self.cfg
        if cfg.workload == "pretrain" and not cfg.train_data[0].endswith(".npy"):
            self.gpt = GPTBatches.for_config(cfg, self.model_cfg.vocab_size)
            self.train_rows = None
            self.valid_count = min(cfg.eval_samples or cfg.global_batch_size, len(self.gpt.valid))
        else:  # packed rows: LoRA / SFT data, or language-model pretraining on packed .npy rows (the demo base model)
            vocab = self.model_cfg.vocab_size
            self.train_rows = load_packed(cfg.train_data[0], vocab)
            self.valid_rows = load_packed(cfg.validation_data, vocab) if cfg.validation_data else None
            if self.train_rows.row_length != cfg.seq_length:  # the model reads ids[:-1] and predicts ids[1:]
                raise PipelineInputError(f"{self.train_rows.source}: rows hold {self.train_rows.row_length} tokens, "
                                         f"train config seq_length is {cfg.seq_length}")
            self.valid_count = len(self.valid_rows) if self.valid_rows else 0
            if cfg.eval_samples:
                self.valid_count = min(self.valid_count, cfg.eval_samples)

    def micro_batches(self, step: int):
        cfg = self.cfg
        per_rank = cfg.global_batch_size // self.dp
        first = step * cfg.global_batch_size + self.dp_rank * per_rank
        for m in range(self.accum):
            start = first + m * cfg.micro_batch_size
            if self.train_rows is not None:
                yield self.train_rows.batch(sample_order(len(self.train_rows), cfg.seed, start, cfg.micro_batch_size))
            else:
                yield self.gpt.train_batch(list(range(start, start + cfg.micro_batch_size)))

    def _stage_sum(self, value: int) -> int:
        """Sum over the pipeline stages (each holds a slice of the layers)."""
        if self.pp == 1:
            return value
        from megatron.core import parallel_state

        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, group=parallel_state.get_pipeline_model_parallel_group())
        return int(t)

    def _batch_loss(self, losses: torch.Tensor, batch) -> torch.Tensor:
        # LoRA: the reference's loss (one row per micro-batch) whatever micro_batch_size is; SFT (HF Trainer) and
        # pretraining: the token mean of the micro-batch
        return (row_mean if self.cfg.workload == "lora" else masked_mean)(losses, batch.loss_mask)

    def _batch_eval_sums(self, losses: torch.Tensor, batch) -> torch.Tensor:
        return eval_sums(losses, batch.loss_mask, per_row=self.cfg.workload != "pretrain")

    # schedule
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if cfg.lr_schedule == "cosine":
            return cosine_lr(step, cfg.lr, cfg.max_steps)
        return cosine_with_linear_warmup(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps - cfg.warmup_steps)

    # one optimizer step
    def train_step(self, step: int) -> dict[str, float]:
        from workflow_scripts.train.train_optim import average_data_parallel_grads, clip_grad_norm, sum_sequence_parallel_grads

        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        start, total, tokens = time.perf_counter(), 0.0, 0
        if self.pp > 1:  # megatron's 1F1B schedule moves activations between the stages
            from workflow_scripts.train.train_pipeline import train_microbatches

            total, tokens = train_microbatches(self.model, self.micro_batches(step), self.device, self.cfg.seq_length,
                                               self._batch_loss)
        else:
            # TE caches fp8 copies of the weights after a step's first micro-batch; megatron's schedules (PP > 1)
            # say when a step starts, this loop must too, or trained weights would keep their first step's copies.
            self.model.set_is_first_microbatch()
            summed = torch.zeros((), dtype=torch.float64, device=self.device)
            for batch in self.micro_batches(step):
                batch = batch.to(self.device)
                loss = self._batch_loss(stage_output(self.model, batch.tokens, batch.targets), batch)
                (loss / self.accum).backward()
                summed += loss.detach().double() / self.accum  # no host sync per micro-batch: one .item() per step
                tokens += batch.tokens.numel()
            total = float(summed)
        if self.megatron_optimizer:
            grad_norm = self.optimizer.step()  # DP reduce, clip, update
        else:
            sum_sequence_parallel_grads(self.params)
            average_data_parallel_grads(self.params)
            grad_norm = clip_grad_norm(self.params, self.cfg.clip_grad)
            self.optimizer.step()
        loss_t = torch.tensor([total], dtype=torch.float64, device=self.device)  # NCCL reduces device tensors only
        self._dp_mean(loss_t)
        elapsed = time.perf_counter() - start
        return {"loss": float(loss_t), "lr": lr, "grad_norm": grad_norm, "tokens": tokens * self.dp,
                "tokens_per_s": tokens * self.dp / elapsed, "step_time_s": elapsed}

    def _dp_mean(self, t: torch.Tensor) -> None:
        from megatron.core import parallel_state

        if self.dp > 1:
            torch.distributed.all_reduce(t, group=parallel_state.get_data_parallel_group())
            t /= self.dp

    @torch.no_grad()
    def evaluate(self) -> float:
        """LoRA: mean over validation rows of each row's mean loss on answer tokens (§1.8).
        Pretraining: mean token NLL over the first eval_samples validation sequences (log perplexity, §2.7)."""
        self.model.eval()
        rows = list(range(self.dp_rank, self.valid_count, self.dp))
        chunks = [rows[i : i + self.cfg.micro_batch_size] for i in range(0, len(rows), self.cfg.micro_batch_size)]
        batches = [self.valid_rows.batch(idx) if self.train_rows is not None else self.gpt.valid_batch(idx)
                   for idx in chunks]
        if self.pp > 1:
            from workflow_scripts.train.train_pipeline import eval_microbatches

            per_row_sum = eval_microbatches(self.model, batches, self.device, self.cfg.seq_length,
                                            self._batch_eval_sums).cpu()
        else:
            per_row_sum = torch.zeros(2, dtype=torch.float64)  # (sum of row means or token NLLs, count)
            for batch in batches:
                batch = batch.to(self.device)
                per_row_sum += self._batch_eval_sums(stage_output(self.model, batch.tokens, batch.targets), batch)
        if self.dp > 1:
            from megatron.core import parallel_state

            per_row_sum = per_row_sum.to(self.device)  # NCCL reduces device tensors only
            torch.distributed.all_reduce(per_row_sum, group=parallel_state.get_data_parallel_group())
        return float(per_row_sum[0] / per_row_sum[1].clamp(min=1))

    # live logs (truncated to the checkpoint's offsets on resume, so they read as one uninterrupted run)
    def _open_live(self, offsets: dict[str, int] | None) -> None:
        if self.rank == 0:
            if offsets is None:
                shutil.rmtree(self.live, ignore_errors=True)
            self.live.mkdir(parents=True, exist_ok=True)
            for name, fields in (("steps.csv", STEP_FIELDS), ("eval.csv", EVAL_FIELDS)):
                path = self.live / name
                if offsets is None:
                    path.write_text(",".join(fields) + "\n")
                else:
                    os.truncate(path, offsets[name])
            if offsets is not None:
                os.truncate(self.live / "mlperf_log.txt", offsets["mlperf_log.txt"])
        torch.distributed.barrier()

    def _offsets(self) -> dict[str, int]:
        return {n: (self.live / n).stat().st_size for n in ("steps.csv", "eval.csv", "mlperf_log.txt")}

    def _append_csv(self, name: str, fields: list[str], row: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.live / name, "a", newline="") as handle:
                csv.DictWriter(handle, fields).writerow({k: row[k] for k in fields})

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {} if self.full_model else {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self, step: int, progress: dict[str, Any]) -> None:
        if self.rank == 0:
            progress = {**progress, "offsets": self._offsets()}
        shared = [progress]
        torch.distributed.broadcast_object_list(shared, src=0)
        from workflow_scripts.train.train_fingerprint import FILE

        metadata = {FILE: json.dumps(self.fingerprint, indent=1, sort_keys=True)} if self.fingerprint else None
        train_checkpoint.save(self.ckpt_dir, step, self.model, self._trainable_state(), self.optimizer, shared[0],
                              self.full_model, metadata=metadata)
        log.info("checkpoint saved at step %d -> %s", step, self.ckpt_dir)

    def _resume(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The newest complete checkpoint that every rank reads without error, and its progress. A corrupt one (a
        truncated file, a bad disk) is named and the previous complete one is used."""
        # torch's distributed-checkpoint reader raises CheckpointException, a BaseException (full-model checkpoints)
        from torch.distributed.checkpoint.api import CheckpointException

        tried: list[str] = []
        for candidate in train_checkpoint.complete_checkpoints(self.ckpt_dir):
            error = None
            try:
                progress = train_checkpoint.load(candidate, self.model, self.optimizer, self.full_model)
            except (Exception, CheckpointException) as err:  # noqa: BLE001 - any read failure makes it unusable
                error = f"{type(err).__name__}: {err}"
            failed = torch.tensor([0 if error is None else 1], device=self.device)
            torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)
            if not int(failed):
                log.info("resumed from %s (step %d)", candidate, progress["step"])
                return candidate, progress
            log.warning("checkpoint %s cannot be read (%s); trying the previous complete one", candidate,
                        error or "on another rank")
            tried.append(str(candidate))
        if tried:  # the model may hold part of one of them: never start over on top of it
            raise PipelineInputError(f"no complete checkpoint in {self.ckpt_dir} can be read ({', '.join(tried)}); "
                                     f"remove {self.ckpt_dir} to start this run afresh")
        return None, None

    def run(self) -> int:
        cfg = self.cfg
        resume, saved = self._resume()
        progress: dict[str, Any] = saved or {"step": 0, "evals": [], "run_time_s": 0.0, "status": None}
        self._open_live(progress.get("offsets") if resume is not None else None)
        mllog = self._run_log() if self.rank == 0 else None
        if mllog and resume is None:
            mllog.init(self._submission(), self._hyperparameters())
            torch.distributed.barrier()
            mllog.run_start()
            mllog.block_start(0)
        elif resume is None:
            torch.distributed.barrier()
        step = progress["step"]
        run_start = time.monotonic() - progress["run_time_s"]
        start_step = step
        meter = Progress(log, f"train {cfg.recipe}", cfg.max_steps - start_step, interval=5.0)
        status = progress.get("status")
        fail_at = int(os.environ.get("PIPELINE_TEST_KILL_AT_STEP", "0"))
        # test-only: seconds to sleep after each step of a run that did not resume, so that a Slurm test job
        # outlasts its walltime signal while the resumed job runs at full speed (tests/test_slurm_resume.py)
        step_sleep = float(os.environ.get("PIPELINE_TEST_STEP_SLEEP_S", "0"))
        tokens_seen = 0  # in this process, for the progress line's rates and ETA
        diverged: dict[str, Any] | None = None
        while status is None and step < cfg.max_steps:
            metrics = self.train_step(step)
            step += 1
            samples = step * cfg.global_batch_size
            self._append_csv("steps.csv", STEP_FIELDS, {"step": step, "consumed_samples": samples, **metrics})
            bad = [k for k in ("loss", "grad_norm") if not math.isfinite(metrics[k])]
            if bad:  # diverged: stop now; the log's run_stop says aborted and the job fails
                diverged = {"step": step, **{k: str(metrics[k]) for k in bad}}
                log.error("diverged at step %d: %s; the run is aborted", step,
                          ", ".join(f"{k} {metrics[k]}" for k in bad))
                status = "aborted"
                break
            if mllog and step % cfg.log_every_steps == 0:
                mllog.train_loss(metrics["loss"], samples, metrics["lr"])
            tokens_seen += metrics["tokens"]
            meter.update(step - start_step, force=step == start_step + 1, steps=step - start_step, tokens=tokens_seen)
            log.info("step %d loss %.4f lr %.3g grad_norm %.3g tokens/s %.0f", step, metrics["loss"], metrics["lr"],
                     metrics["grad_norm"], metrics["tokens_per_s"])
            if self.valid_count and self.eval_schedule.is_eval_step(step):
                value = self.evaluate()
                if not math.isfinite(value):
                    diverged = {"step": step, "eval_loss": str(value)}
                    log.error("diverged at step %d: evaluation %s; the run is aborted", step, value)
                    status = "aborted"
                    break
                progress["evals"].append({"step": step, "samples_count": samples, "eval_loss": value})
                self._append_csv("eval.csv", EVAL_FIELDS, {"step": step, "samples_count": samples, "eval_loss": value})
                if mllog:
                    mllog.evaluation(value, samples)
                log.info("eval at %d samples: %.5f (target %.4g)", samples, value, cfg.target)
                if cfg.workload != "sft" and value <= cfg.target:
                    status = "success"
                elif mllog:
                    mllog.block_start(samples)
            progress.update(step=step, run_time_s=time.monotonic() - run_start, status=status)
            if step_sleep and resume is None:
                time.sleep(step_sleep)
            preempted = self.stop_signal is not None
            periodic = cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
            if (periodic or preempted) and status is None and step < cfg.max_steps:
                self.save_checkpoint(step, progress)
            if preempted and status is None and step < cfg.max_steps:
                log.warning("signal %d: checkpoint saved at step %d, exiting %d", self.stop_signal, step, EXIT_PREEMPTED)
                return EXIT_PREEMPTED
            if fail_at and step == fail_at and resume is None:
                os.kill(os.getpid(), signal.SIGKILL)  # test-only: a crash without any chance to clean up
        status = status or ("success" if cfg.workload == "sft" else "aborted")  # SFT measures speed, has no target
        if mllog:
            mllog.run_stop(step * cfg.global_batch_size, status == "success")
            mllog.close()
        progress["diverged"] = diverged
        self.finish(step, status, progress)
        return EXIT_DIVERGED if diverged else 0

    def _submission(self):
        from workflow_scripts.scoring.mlperf_log import Submission

        return Submission(platform="cpu-demo" if not torch.cuda.is_available() else f"{torch.cuda.get_device_name()}")

    def _run_log(self):
        from workflow_scripts.scoring.mlperf_log import LoraRunLog, PretrainRunLog

        log = (PretrainRunLog if self.cfg.workload == "pretrain" else LoraRunLog)(self.live / "mlperf_log.txt")
        log.benchmark = self.cfg.benchmark_name  # llama2_70b_lora, llama31_405b, or a non-MLPerf name (SFT, demo base)
        return log

    def _hyperparameters(self):
        from workflow_scripts.scoring.mlperf_log import LoraHyperparameters, PretrainHyperparameters

        cfg = self.cfg
        if cfg.workload == "pretrain":
            return PretrainHyperparameters(
                global_batch_size=cfg.global_batch_size, max_sequence_length=cfg.seq_length, learning_rate=cfg.lr,
                end_learning_rate=cfg.min_lr, warmup_steps=cfg.warmup_steps, decay_steps=cfg.max_steps - cfg.warmup_steps,
                beta1=cfg.adam_beta1, beta2=cfg.adam_beta2, epsilon=cfg.adam_eps, weight_decay=cfg.weight_decay,
                gradient_clip_norm=cfg.clip_grad, gradient_accumulation_steps=self.accum, eval_samples=self.valid_count,
                seed=cfg.seed)
        precision = {"fp32": "fp32", "bf16": "bfloat16", "fp8": "fp8"}[cfg.precision]
        return LoraHyperparameters(
            global_batch_size=cfg.global_batch_size, learning_rate=cfg.lr, training_steps=cfg.max_steps,
            weight_decay=cfg.weight_decay, gradient_clip_norm=cfg.clip_grad,
            lora_rank=cfg.lora.rank if cfg.lora else 0, lora_alpha=cfg.lora.alpha if cfg.lora else 0,
            gradient_accumulation_steps=self.accum, train_samples=len(self.train_rows) if self.train_rows else 0,
            eval_samples=self.valid_count, seed=cfg.seed, config_filename=cfg.recipe,
            precision_linear=precision,
            precision_attn=precision if cfg.precision != "fp8" or fp8_attention(cfg) else "bfloat16",
            precision_comm=precision if cfg.precision != "fp8" else "bfloat16",
            tensor_parallelism=cfg.tensor_parallel, pipeline_parallelism=cfg.pipeline_parallel,
            micro_batch_size=cfg.micro_batch_size)

    def finish(self, step: int, status: str, progress: dict[str, Any]) -> None:
        """Final artifacts, each renamed into place; metrics.json last."""
        from workflow_scripts.model.lora_layers import save_adapter

        cfg = self.cfg
        if cfg.lora is not None:
            save_adapter(self.model, cfg.lora, self.out / "adapter")
        else:
            self._save_final_model()
        if self.rank != 0:
            return
        for name in ("steps.csv", "eval.csv", "mlperf_log.txt"):
            tmp = self.out / f".{name}.tmp"
            shutil.copyfile(self.live / name, tmp)
            os.replace(tmp, self.out / name)
        write_json(self.out / "resolved_config.json", cfg.resolved())
        evals = progress["evals"]
        run_time = progress["run_time_s"]
        samples = step * cfg.global_batch_size
        rows = list(csv.DictReader(open(self.live / "steps.csv")))
        finite = [float(r["tokens_per_s"]) for r in rows if math.isfinite(float(r["tokens_per_s"]))]
        tokens_per_s = sum(finite) / max(len(finite), 1)
        metrics = {
            "workload": cfg.workload, "recipe": cfg.recipe, "seed": cfg.seed, "status": status,
            "gpus": torch.distributed.get_world_size() if torch.cuda.is_available() else 0,
            "processes": torch.distributed.get_world_size(),
            "steps": step, "samples": samples, "time_to_train_s": run_time,
            "train_samples_per_second": round(samples / run_time, 3) if run_time else None,
            "tokens_per_s": tokens_per_s,
            "quality_metric": "eval_loss" if cfg.workload == "lora" else ("log_perplexity" if cfg.workload == "pretrain" else None),
            "final_quality": evals[-1]["eval_loss"] if evals else None,
            "target": cfg.target if cfg.workload != "sft" else None,
            "evals": evals,
            "diverged": progress.get("diverged"),  # step and the non-finite values (as strings), or null
            "mfu": self._mfu(tokens_per_s),
            "parallel": {"tensor": cfg.tensor_parallel, "pipeline": self.pp, "data": self.dp,
                         "optimizer": "megatron" if self.megatron_optimizer else "torch"},
            "memory": {**self.memory, "peak_allocated_gib": (round(torch.cuda.max_memory_allocated() / 1024**3, 2)
                                                             if torch.cuda.is_available() else None)},
        }
        write_json(self.out / "metrics.json", metrics)

    def _mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilisation on GPU: 6 x parameters x tokens/s over the GPUs' dense bf16 peak (H100 SXM:
        989 TFLOP/s). Parameters are this rank's share times TP; attention FLOPs are not counted (a lower bound)."""
        if not torch.cuda.is_available():
            return None
        peak = 989.4e12 * torch.distributed.get_world_size()
        return 6 * self.model_params * self.cfg.tensor_parallel * tokens_per_s / peak

    def _save_final_model(self) -> None:
        from workflow_scripts.convert.conversion import write_model_config
        from workflow_scripts.model.llama_model import hf_config_dict

        final = self.out / "checkpoint"
        tmp = self.out / ".checkpoint.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        torch.distributed.barrier()
        train_checkpoint.dist_save(self.model.sharded_state_dict(), tmp)
        torch.distributed.barrier()
        if self.rank == 0:
            # hf_config lets `convert mcore-to-hf` export the trained model
            write_model_config(tmp, self.model_cfg, self.cfg.tensor_parallel, self.pp, self.cfg.spec, "float32",
                               hf_config_dict(self.model_cfg), f"train {self.cfg.recipe}")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        torch.distributed.barrier()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--overrides", type=Path, help="YAML file of TrainConfig fields overriding the recipe")
    parser.add_argument("--overrides-inline", default="", help="the same as a YAML mapping string (rules use this)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="single overrides (CLI wins)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ckpt-dir", type=Path, required=True)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {}
    if args.overrides:
        overrides.update(yaml.safe_load(args.overrides.read_text()) or {})
    if getattr(args, "overrides_inline", ""):
        overrides.update(yaml.safe_load(args.overrides_inline) or {})
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return build_config(args.recipe, overrides)


def _body(argv: Sequence[str] | None) -> int:
    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel

    args = _parse(argv)
    cfg = load_config(args)  # every config error surfaces here, before any compute
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world % (cfg.tensor_parallel * cfg.pipeline_parallel):
        raise PipelineInputError(f"train config: tensor_parallel x pipeline_parallel = {cfg.tensor_parallel} x "
                                 f"{cfg.pipeline_parallel} does not divide the {world} launched processes")
    if cfg.optimizer_impl == "megatron" and not torch.cuda.is_available():
        raise PipelineInputError("train config: optimizer_impl megatron needs CUDA (megatron-core's DDP and optimizer "
                                 "allocate on the GPU); use auto or torch on CPU")
    if cfg.checkpoint and not Path(cfg.checkpoint, "model_config.json").is_file():
        raise PipelineInputError(f"train config: checkpoint {cfg.checkpoint} is missing or not a converted checkpoint")
    from workflow_scripts.train.train_fingerprint import check_resume, fingerprint

    run_fingerprint = fingerprint(cfg.resolved(), world)
    resume = train_checkpoint.newest_complete(args.ckpt_dir)
    if resume is not None:  # before any compute: a checkpoint of another run is never resumed
        check_resume(resume, run_fingerprint)
    torch.manual_seed(cfg.seed)
    init_parallel(cfg.tensor_parallel, cfg.pipeline_parallel, seed=cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, args.out, args.ckpt_dir, run_fingerprint)

        def on_signal(signum, _frame):
            trainer.stop_signal = signum

        if trainer.full_model:  # megatron dist checkpoints: their writer's helper must outlive Slurm's signals
            train_checkpoint.spawn_writer_helper_ignoring((signal.SIGTERM, signal.SIGUSR1))
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGUSR1, on_signal)
        return trainer.run()
    finally:
        shutdown_parallel()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
