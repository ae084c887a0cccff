"""Outputs appear complete or not at all: write to a temporary sibling, rename when done."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator


def temp_sibling(path: str | os.PathLike[str], tag: str = "") -> Path:
    """A hidden name in the same directory (same filesystem, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{tag}-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path`; rename it onto `path` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write pretty JSON atomically."""
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
