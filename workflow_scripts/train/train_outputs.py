"""What a training run writes: the live logs (steps.csv, eval.csv, mlperf_log.txt under ckpt-dir/live, truncated to a
checkpoint's offsets on resume), the MLPerf log's submission and hyperparameters, and the final artifacts with
metrics.json last. A mixin of workflow_scripts.train.train_run.Trainer, split out by job."""
from __future__ import annotations

import csv
import math
import os
import shutil
from typing import Any

import torch

from workflow_scripts.core.atomic import write_json
from workflow_scripts.train import train_checkpoint
from workflow_scripts.train.train_model import fp8_attention

STEP_FIELDS = ["step", "consumed_samples", "loss", "lr", "grad_norm", "tokens_per_s", "step_time_s"]
EVAL_FIELDS = ["step", "samples_count", "eval_loss"]


class OutputsMixin:
    """Reads the attributes that Trainer.__init__ sets."""

    def _start_logs(self, progress: dict[str, Any]):
        """The live logs (truncated to the checkpoint's offsets on resume) and rank 0's MLPerf log; a fresh run logs
        init, then run_start once every rank is ready."""
        fresh = self.resumed_from is None
        self._open_live(None if fresh else progress.get("offsets"))
        mllog = self._run_log() if self.rank == 0 else None
        if mllog and fresh:
            mllog.init(self._submission(), self._hyperparameters())
            torch.distributed.barrier()
            mllog.run_start()
            mllog.block_start(0)
        elif fresh:
            torch.distributed.barrier()
        return mllog

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

    def _submission(self):
        from workflow_scripts.scoring.mlperf_log import Submission

        return Submission(platform="cpu-demo" if not torch.cuda.is_available() else f"{torch.cuda.get_device_name()}")

    def _run_log(self):
        from workflow_scripts.scoring.mlperf_log import LoraRunLog, PretrainRunLog

        log = (PretrainRunLog if self.cfg.workload == "pretrain" else LoraRunLog)(self.live / "mlperf_log.txt")
        log.benchmark = self.cfg.benchmark_name  # llama2_70b_lora, llama31_405b, or a non-MLPerf name (SFT, demo base)
        return log

    def _hyperparameters(self):
        from workflow_scripts.scoring.mlperf_log import Disclosure, LoraHyperparameters, PretrainHyperparameters

        cfg = self.cfg
        if cfg.workload == "pretrain":
            return PretrainHyperparameters.from_config(cfg, self.accum, self.valid_count, fp8_attention(cfg))
        disclosure = Disclosure.from_config(cfg, fp8_attention(cfg))
        return LoraHyperparameters(
            global_batch_size=cfg.global_batch_size, learning_rate=cfg.lr, training_steps=cfg.max_steps,
            weight_decay=cfg.weight_decay, gradient_clip_norm=cfg.clip_grad,
            lora_rank=cfg.lora.rank if cfg.lora else 0, lora_alpha=cfg.lora.alpha if cfg.lora else 0,
            gradient_accumulation_steps=self.accum, train_samples=len(self.train_rows) if self.train_rows else 0,
            eval_samples=self.valid_count, seed=cfg.seed, config_filename=disclosure.config_filename,
            precision_linear=disclosure.precision_linear, precision_attn=disclosure.precision_attn,
            precision_comm=disclosure.precision_comm, tensor_parallelism=disclosure.tensor_parallelism,
            pipeline_parallelism=disclosure.pipeline_parallelism, micro_batch_size=disclosure.micro_batch_size)

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
