"""What defines a training run, written beside every checkpoint, so that a rerun resumes only its own run.

The fingerprint holds the resolved config (less the keys that only steer logging and checkpoint cadence), the number
of processes, and the identity of every input: data files and prefixes, the base checkpoint. A file's identity is its
size and a sha256 of its first and last MiB (cheap on multi-GB files, and any truncation or re-export changes it);
small files (a Megatron .idx, model_config.json) are hashed whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.file_identity import file_identity

FILE = "fingerprint.json"
NOT_DEFINING = ("checkpoint_every_steps", "log_every_steps")  # change how a run is logged, not what it computes
# the parallel layout: a resume may change it (the checkpoint is resharded, train_reshard.py), as the same global
# batch gives the same losses at any layout up to float rounding
LAYOUT = ("config.tensor_parallel", "config.pipeline_parallel", "config.sequence_parallel", "processes")


def input_identity(path_or_prefix: str) -> dict[str, Any]:
    """A file, a folder (every file below it), or a Megatron prefix (its .idx and .bin)."""
    path = Path(path_or_prefix)
    if path.is_file():
        return file_identity(path)
    if path.is_dir():
        return {str(p.relative_to(path)): file_identity(p) for p in sorted(path.rglob("*")) if p.is_file()}
    pair = {ext: Path(f"{path_or_prefix}.{ext}") for ext in ("idx", "bin")}
    if all(p.is_file() for p in pair.values()):
        return {ext: file_identity(p) for ext, p in pair.items()}
    return {"missing": True}


def fingerprint(resolved: dict[str, Any], processes: int) -> dict[str, Any]:
    config = {k: v for k, v in resolved.items() if k not in NOT_DEFINING}
    inputs = [*resolved.get("train_data", ()), resolved.get("validation_data", ""), resolved.get("checkpoint", "")]
    return json.loads(json.dumps({"config": config, "processes": processes,
                                  "inputs": {p: input_identity(p) for p in inputs if p}}))


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted names of what differs (config keys, processes, inputs)."""
    out = [f"config.{k}" for k in sorted(set(saved.get("config", {})) | set(current["config"]))
           if saved.get("config", {}).get(k) != current["config"].get(k)]
    if saved.get("processes") != current["processes"]:
        out.append("processes")
    out += [f"inputs[{k}]" for k in sorted(set(saved.get("inputs", {})) | set(current["inputs"]))
            if saved.get("inputs", {}).get(k) != current["inputs"].get(k)]
    return out


def check_resume(checkpoint: Path, current: dict[str, Any]) -> list[str]:
    """Refuse to resume from a checkpoint of another run, naming what differs and how to start fresh; returns the
    layout keys that differ (allowed: the checkpoint is resharded)."""
    path = checkpoint / FILE
    how = f"to start this run afresh, remove {checkpoint.parent}"
    if not path.is_file():
        raise PipelineInputError(f"{checkpoint}: checkpoint has no {FILE} (saved by an older trainer); {how}")
    diff = differences(json.loads(path.read_text()), current)
    layout = [d for d in diff if d in LAYOUT]
    diff = [d for d in diff if d not in LAYOUT]
    if diff:
        shown = ", ".join(diff[:12]) + (" ..." if len(diff) > 12 else "")
        raise PipelineInputError(f"{checkpoint}: saved by a run with other settings or inputs ({shown}); "
                                 f"it would mix two runs; {how}")
    return layout
