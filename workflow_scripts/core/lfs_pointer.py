"""Git LFS pointer files: what a clone without `git lfs pull` holds in place of large files (HF model and data repos).

A pointer is ~130 bytes of text starting with the spec line below; read as safetensors, JSON or parquet it fails with
an unrelated message (or, for safetensors, a header length of ~2**61 bytes), so readers check for it first.
"""
from __future__ import annotations

from pathlib import Path

from workflow_scripts.core.errors import PipelineInputError

SPEC_LINE = b"version https://git-lfs.github.com/spec/v1"


def is_lfs_pointer(path: str | Path) -> bool:
    """True when the file starts with the LFS pointer spec line (reads only those bytes)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SPEC_LINE)) == SPEC_LINE
    except OSError:
        return False  # the caller's own open reports a missing or unreadable file


def refuse_lfs_pointer(path: str | Path) -> None:
    if is_lfs_pointer(path):
        raise PipelineInputError(
            f"{path}: a Git LFS pointer, not the file itself (run `git lfs pull` in the repository it came from)")
