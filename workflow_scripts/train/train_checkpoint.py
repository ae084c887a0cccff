"""Resumable training checkpoints in a directory that is a rule *param*, not an output (Snakemake would delete it).

Layout: <dir>/step_<N>/ holds `model/` (megatron dist_checkpointing, full-model training only), `state/` (dist
checkpointing: LoRA adapters and the Adam moments, train_reshard.py; CPU/torch optimizer), `rank_<r>.pt` (this rank's
RNG states and layout, the progress with the byte offsets of the live logs, Adam's step count; with megatron's GPU
optimizer also this rank's trainable tensors and optimizer state) and, written last, `complete`. Model and `state/`
are layout-independent: a resume may change TP/PP/DP (resharding), except from megatron's per-rank optimizer state.
Resume takes the newest step with `complete`; partial ones (a crash mid-save) are ignored.
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

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.train import train_reshard

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


_HELPER: Any = None  # the writer helper's manager, kept for the process's life


def spawn_writer_helper_ignoring(signals: tuple[int, ...]) -> None:
    """Start megatron's checkpoint-writer helper now, with `signals` ignored and dying with this process.
    dist_checkpointing.save hands its results to a process it *spawns* at the first save (a multiprocessing manager)
    and keeps for the process's life: a helper spawned by the save itself would die of Slurm's walltime signal or
    scancel's SIGTERM, which reach every process of the job step (the save that the signal asked for failed with
    BrokenPipeError, tests/test_slurm_resume.py); and a trainer killed outright (SIGKILL, the OOM killer) would leave
    it running forever, holding the job's stdout and stderr open (a test waiting for them hung)."""
    import multiprocessing

    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from multiprocessing.managers import SyncManager

    global _HELPER
    if filesystem_async._results_queue is not None:  # private, but the only handle on that helper
        return
    _HELPER = SyncManager(ctx=multiprocessing.get_context("spawn"))
    _HELPER.start(_helper_init, (signals, os.getpid()))
    filesystem_async._results_queue = _HELPER.Queue()


def _helper_init(signals: tuple[int, ...], parent: int) -> None:
    """In the helper: ignore `signals`, and be killed when the trainer dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the helper outlives a killed trainer, as before
        pass
    if os.getppid() != parent:  # the trainer died before prctl took effect
        os._exit(0)


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
    state: dict[str, Any] = {"rng": rng_state(), "progress": progress, "layout": train_reshard.layout()}
    if hasattr(optimizer, "save_sharded"):  # megatron's optimizer (GPU): its state per rank, this layout only
        state.update(trainable={k: v.detach().clone() for k, v in trainable.items()}, optimizer=optimizer.state_dict())
    else:  # torch AdamW: adapters and moments as sharded tensors, loadable at any layout
        train_reshard.save_state(folder, model, optimizer, full_model)
        state["adam_step"] = train_reshard.adam_step(optimizer)
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


def load(folder: Path, model: torch.nn.Module, optimizer: Any, full_model: bool,
         seed: int) -> tuple[dict[str, Any], dict[str, int] | None]:
    """Restore model/optimizer/RNG of this rank: the saved progress and, where the checkpoint was saved at another
    layout (resharded), that layout. Progress is every rank's (rank 0's, broadcast before the save) and the data
    position follows from the step (the sample order is global), so both carry over; the per-rank RNG states do
    not map to other ranks and are re-seeded from `seed` and the step."""
    from megatron.core import dist_checkpointing

    first = torch.load(folder / "rank_0.pt", weights_only=False)
    saved, now = first.get("layout"), train_reshard.layout()
    moved = saved is not None and saved != now
    if moved and "optimizer" in first:
        raise PipelineInputError(f"{folder}: holds megatron's optimizer state per rank (the GPU optimizer path), "
                                 f"which resumes only at its own layout {saved}, not at {now}")
    if full_model:
        model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), str(folder / "model")))
    if (folder / train_reshard.STATE).is_dir():
        train_reshard.load_state(folder, model, optimizer, full_model, first["adam_step"])
    if moved:
        reseed(seed + first["progress"]["step"])
        return first["progress"], saved
    own = torch.load(folder / f"rank_{torch.distributed.get_rank()}.pt", weights_only=False)
    if "optimizer" in own:  # the per-rank format (megatron's optimizer, or a checkpoint of an older trainer)
        _load_per_rank(folder, own, model, optimizer)
    set_rng_state(own["rng"])
    return first["progress"], None


def _load_per_rank(folder: Path, state: dict[str, Any], model: torch.nn.Module, optimizer: Any) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    if hasattr(optimizer, "load_sharded"):
        optimizer.load_sharded(folder)


def reseed(seed: int) -> None:
    """Every RNG of this rank (torch, numpy, python, megatron's model-parallel tracker) from `seed`: deterministic
    for a given checkpoint and layout."""
    from megatron.core import tensor_parallel

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
