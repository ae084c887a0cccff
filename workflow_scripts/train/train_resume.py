"""Checkpoints of a training run: saving one (with the live logs' offsets and the run's fingerprint) and resuming
from the newest complete one that every rank reads. A mixin of workflow_scripts.train.train_run.Trainer."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.train import train_checkpoint

log = logging.getLogger("train")


class ResumeMixin:
    """Reads the attributes that Trainer.__init__ sets."""

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

    def _log_resharding(self, step: int, saved: dict[str, int]) -> None:
        from workflow_scripts.train.train_reshard import layout

        now = layout()
        log.warning("resharding checkpoint step %d from TP %d PP %d (DP %d, %d processes) to TP %d PP %d (DP %d, %d "
                    "processes): model, adapters and Adam moments resharded; progress and data position carried over "
                    "(next sample %d); per-rank RNG states re-seeded from seed %d + step", step,
                    saved["tensor_parallel"], saved["pipeline_parallel"], saved["data_parallel"], saved["world_size"],
                    now["tensor_parallel"], now["pipeline_parallel"], now["data_parallel"], now["world_size"],
                    step * self.cfg.global_batch_size, self.cfg.seed)

    def _resume(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The newest complete checkpoint that every rank reads without error, and its progress. A corrupt one (a
        truncated file, a bad disk) is named and the previous complete one is used."""
        # torch's distributed-checkpoint reader raises CheckpointException, a BaseException (full-model checkpoints)
        from torch.distributed.checkpoint.api import CheckpointException

        tried: list[str] = []
        for candidate in train_checkpoint.complete_checkpoints(self.ckpt_dir):
            error = None
            try:
                progress, saved_layout = train_checkpoint.load(candidate, self.model, self.optimizer, self.full_model,
                                                               self.cfg.seed)
            except PipelineInputError:  # the same on every rank (it reads rank 0's file): the checkpoint is sound
                raise
            except (Exception, CheckpointException) as err:  # noqa: BLE001 - any read failure makes it unusable
                error = f"{type(err).__name__}: {err}"
            failed = torch.tensor([0 if error is None else 1], device=self.device)
            torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)
            if not int(failed):
                log.info("resumed from %s (step %d)", candidate, progress["step"])
                if saved_layout:
                    self._log_resharding(progress["step"], saved_layout)
                return candidate, progress
            log.warning("checkpoint %s cannot be read (%s); trying the previous complete one", candidate,
                        error or "on another rank")
            tried.append(str(candidate))
        if tried:  # the model may hold part of one of them: never start over on top of it
            raise PipelineInputError(f"no complete checkpoint in {self.ckpt_dir} can be read ({', '.join(tried)}); "
                                     f"remove {self.ckpt_dir} to start this run afresh")
        return None, None
