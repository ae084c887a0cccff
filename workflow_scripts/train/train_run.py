"""One training run of the trainer (workflow_scripts/train/trainer.py is its command line): the model, optimizer and
data of this rank, the optimizer step (micro-batches, or megatron's 1F1B schedule under PP), evaluation, and the loop
with its checkpoint decision after every step. Checkpoints: train_resume.py; logs and final artifacts: train_outputs.py.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.progress import Progress
from workflow_scripts.train.schedules import EvalSchedule, cosine_lr, cosine_with_linear_warmup
from workflow_scripts.train.train_config import TrainConfig
from workflow_scripts.train.train_data import GPTBatches, load_packed, sample_order
from workflow_scripts.train.train_loss import eval_sums, masked_mean, row_mean, stage_output
from workflow_scripts.train.train_model import build_model, resolve_recompute
from workflow_scripts.train.train_outputs import EVAL_FIELDS, STEP_FIELDS, OutputsMixin
from workflow_scripts.train.train_resume import ResumeMixin

log = logging.getLogger("train")
EXIT_PREEMPTED = 75  # the job saved a checkpoint on a signal; the rule's retry resumes it
EXIT_DIVERGED = 3  # a non-finite loss or gradient norm: the run is aborted, never reported as a result


class Trainer(ResumeMixin, OutputsMixin):
    """One training run on this rank: the model, optimizer and data, the optimizer step, evaluation and the loop."""

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
        if cfg.cuda_graphs:
            from workflow_scripts.train.train_cuda_graphs import check_cuda_graphs

            check_cuda_graphs(cfg, self.recompute)
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
        self.graphs = None
        if cfg.cuda_graphs:
            from workflow_scripts.train.train_cuda_graphs import LayerGraphs

            self.graphs = LayerGraphs(self.model, self.optimizer, cfg.seq_length, cfg.micro_batch_size,
                                      cfg.global_batch_size, self.dp)
        self.full_model = cfg.lora is None
        self._load_data()
        every = math.ceil(cfg.eval_every_samples / cfg.global_batch_size)
        self.eval_schedule = EvalSchedule(every_steps=every, first_step=(cfg.skipped_evals + 1) * every)
        self.live = ckpt_dir / "live"
        self.stop_signal: int | None = None
        self.resumed_from: Path | None = None  # the checkpoint run() resumed from

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
        if self.graphs is not None:  # captured once, after the eager warm-up steps; not part of a step's time
            self.graphs.before_step(step)
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
            mask = self.graphs.mask if self.graphs is not None else None
            for index, batch in enumerate(self.micro_batches(step)):
                batch = batch.to(self.device)
                if self.graphs is not None:
                    self.graphs.set_micro_batch(index)
                loss = self._batch_loss(stage_output(self.model, batch.tokens, batch.targets, mask), batch)
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

    def run(self) -> int:
        cfg = self.cfg
        self.resumed_from, saved = self._resume()
        progress: dict[str, Any] = saved or {"step": 0, "evals": [], "run_time_s": 0.0, "status": None}
        mllog = self._start_logs(progress)
        step = progress["step"]
        run_start = time.monotonic() - progress["run_time_s"]
        self._meter = Progress(log, f"train {cfg.recipe}", cfg.last_step - step, interval=5.0)
        self._start_step, self._tokens_seen = step, 0  # in this process, for the progress line's rates and ETA
        status = progress.get("status")
        diverged: dict[str, Any] | None = None
        while status is None and step < cfg.last_step:
            step += 1
            status, diverged = self._step(step, progress, mllog)
            if diverged:  # stop now; the log's run_stop says aborted and the job fails
                break
            progress.update(step=step, run_time_s=time.monotonic() - run_start, status=status)
            if self.after_step(step, status, progress):
                return EXIT_PREEMPTED
        status = status or ("success" if cfg.workload == "sft" else "aborted")  # SFT measures speed, has no target
        if mllog:
            mllog.run_stop(step * cfg.global_batch_size, status == "success")
            mllog.close()
        progress["diverged"] = diverged
        self.finish(step, status, progress)
        return EXIT_DIVERGED if diverged else 0

    def _step(self, step: int, progress: dict[str, Any], mllog) -> tuple[str | None, dict[str, Any] | None]:
        """Optimizer step `step` (counted from 1) with its logs and, where due, an evaluation: the run's status
        after it and, where a value was not finite, what diverged."""
        cfg = self.cfg
        metrics = self.train_step(step - 1)
        samples = step * cfg.global_batch_size
        self._append_csv("steps.csv", STEP_FIELDS, {"step": step, "consumed_samples": samples, **metrics})
        bad = [k for k in ("loss", "grad_norm") if not math.isfinite(metrics[k])]
        if bad:
            log.error("diverged at step %d: %s; the run is aborted", step, ", ".join(f"{k} {metrics[k]}" for k in bad))
            return "aborted", {"step": step, **{k: str(metrics[k]) for k in bad}}
        if mllog and step % cfg.log_every_steps == 0:
            mllog.train_loss(metrics["loss"], samples, metrics["lr"])
        self._tokens_seen += metrics["tokens"]
        done = step - self._start_step
        self._meter.update(done, force=done == 1, steps=done, tokens=self._tokens_seen)
        log.info("step %d loss %.4f lr %.3g grad_norm %.3g tokens/s %.0f", step, metrics["loss"], metrics["lr"],
                 metrics["grad_norm"], metrics["tokens_per_s"])
        if self.valid_count and self.eval_schedule.is_eval_step(step):
            return self._eval_step(step, progress, mllog)
        return None, None

    def _eval_step(self, step: int, progress: dict[str, Any], mllog) -> tuple[str | None, dict[str, Any] | None]:
        """The evaluation after step `step`, logged: "success" at the target (not for SFT), or what diverged."""
        cfg = self.cfg
        samples = step * cfg.global_batch_size
        value = self.evaluate()
        if not math.isfinite(value):
            log.error("diverged at step %d: evaluation %s; the run is aborted", step, value)
            return "aborted", {"step": step, "eval_loss": str(value)}
        progress["evals"].append({"step": step, "samples_count": samples, "eval_loss": value})
        self._append_csv("eval.csv", EVAL_FIELDS, {"step": step, "samples_count": samples, "eval_loss": value})
        if mllog:
            mllog.evaluation(value, samples)
        log.info("eval at %d samples: %.5f (target %.4g)", samples, value, cfg.target)
        if cfg.workload != "sft" and value <= cfg.target:
            return "success", None
        if mllog:
            mllog.block_start(samples)
        return None, None

    def after_step(self, step: int, status: str | None, progress: dict[str, Any]) -> bool:
        """The checkpoint decision once step `step` is recorded: save where one is due or a signal came; True where
        the signal means this job stops now (checkpoint saved, exit EXIT_PREEMPTED)."""
        cfg = self.cfg
        running = status is None and step < cfg.last_step
        preempted = self.stop_signal is not None
        periodic = cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
        if (periodic or preempted) and running:
            self.save_checkpoint(step, progress)
        if preempted and running:
            log.warning("signal %d: checkpoint saved at step %d, exiting %d", self.stop_signal, step, EXIT_PREEMPTED)
            return True
        return False
