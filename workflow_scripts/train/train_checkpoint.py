"""Resumable training checkpoints in a directory that is a rule *param*, not an output (Snakemake would delete it).

Layout: <dir>/step_<N>/ holds `model/` (megatron dist_checkpointing, full-model training only), `rank_<r>.pt`
(this rank's trainable tensors, optimizer, RNG states, progress, byte offsets of the live logs) and, written last,
`complete`. Resume takes the newest step with `complete`; partial ones (a crash mid-save) are ignored.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

COMPLETE = "complete"


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message names the folder and the writer's own error."""


def dist_save(sharded_state_dict: dict, folder: Path) -> None:
    """megatron dist_checkpointing.save, whose writer processes report their errors through DCP's CheckpointException:
    re-raised as one line naming the folder and the worker's error (e.g. the file a full disk refused). A writer
    killed outright never reports and megatron would wait for it forever (a trainer hung so, ignoring SIGTERM): the
    children are watched during the save."""
    from megatron.core import dist_checkpointing
    from torch.distributed.checkpoint.api import CheckpointException

    from workflow_scripts.core.workers import checkpoint_failure, child_deaths

    try:
        with child_deaths("checkpoint writer"):
            dist_checkpointing.save(sharded_state_dict, str(folder))
    except (Exception, CheckpointException) as err:  # CheckpointException is a BaseException
        raise CheckpointWriteError(f"{folder}: checkpoint not saved ({checkpoint_failure(err)})") from err


def complete_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Step folders marked complete, newest first."""
    ckpt_dir = Path(ckpt_dir)
    steps = sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if ckpt_dir.is_dir() else []
    return [p for p in reversed(steps) if (p / COMPLETE).is_file()]


def newest_complete(ckpt_dir: str | Path) -> Path | None:
    complete = complete_checkpoints(ckpt_dir)
    return complete[0] if complete else None


def spawn_writer_helper_ignoring(signals: tuple[int, ...]) -> None:
    """Start megatron's checkpoint-writer helper now, with `signals` ignored. dist_checkpointing.save hands its results
    to a process it *spawns* at the first save and keeps for the process's life; exec resets signals that have a
    handler (the trainer's) to their default, while ignored ones stay ignored. Slurm's walltime signal and scancel's
    SIGTERM reach every process of the job step: a helper spawned later died of them, and the save that the signal
    asked for failed with BrokenPipeError (seen through Slurm, tests/test_slurm_resume.py)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        filesystem_async._get_write_results_queue()  # private, but the only handle on that helper
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def rng_state() -> dict[str, Any]:
    from megatron.core.tensor_parallel import random as mp_random

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "tracker": mp_random.get_cuda_rng_tracker().get_states()}


def set_rng_state(state: dict[str, Any]) -> None:
    from megatron.core.tensor_parallel import random as mp_random

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    mp_random.get_cuda_rng_tracker().set_states(state["tracker"])


def save(ckpt_dir: str | Path, step: int, model: torch.nn.Module, trainable: dict[str, torch.Tensor],
         optimizer: Any, progress: dict[str, Any], full_model: bool, keep: int = 2,
         metadata: dict[str, str] | None = None) -> Path:
    """Collective: every rank calls it. Returns the step folder. `metadata` (name -> text) is written by rank 0
    before the folder is marked complete (the run's fingerprint)."""
    rank = torch.distributed.get_rank()
    folder = Path(ckpt_dir) / f"step_{step:08d}"
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    torch.distributed.barrier()
    if full_model:
        (folder / "model").mkdir(exist_ok=True)
        dist_save(model.sharded_state_dict(), folder / "model")
    state = {"trainable": {k: v.detach().clone() for k, v in trainable.items()}, "optimizer": optimizer.state_dict(),
             "rng": rng_state(), "progress": progress}
    tmp = folder / f".rank_{rank}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / f"rank_{rank}.pt")
    if hasattr(optimizer, "save_sharded"):  # megatron's distributed optimizer: Adam state sharded over DP
        optimizer.save_sharded(folder)
    torch.distributed.barrier()
    if rank == 0:
        for name, text in (metadata or {}).items():
            (folder / name).write_text(text)
        (folder / COMPLETE).write_text(str(step))
        for old in sorted(Path(ckpt_dir).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    torch.distributed.barrier()
    return folder


def load(folder: Path, model: torch.nn.Module, optimizer: Any, full_model: bool) -> dict[str, Any]:
    """Restore model/optimizer/RNG of this rank; returns the saved progress."""
    from megatron.core import dist_checkpointing

    if full_model:
        model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), str(folder / "model")))
    state = torch.load(folder / f"rank_{torch.distributed.get_rank()}.pt", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    if hasattr(optimizer, "load_sharded"):
        optimizer.load_sharded(folder)
    set_rng_state(state["rng"])
    return state["progress"]
