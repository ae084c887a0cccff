"""Outputs appear complete or not at all: write to a temporary sibling, rename when done."""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any, Iterator

log = logging.getLogger("atomic")
# .<name>.tmp<tag>-<pid><suffix>: what temp_sibling makes, plus suffixes a writer adds (.bin, .idx, .lengths.tmp)
_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<tag>[A-Za-z0-9_]*)-(?P<pid>\d+)(?P<suffix>(\.[A-Za-z0-9_]+)*)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of `path` left by writers that died without cleaning up (SIGKILL, OOM, a node
    lost): files or folders whose process no longer exists on this host. Snakemake never runs two jobs writing the
    same output, so a temp of a live process is the only kind kept. Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for entry in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
        match = _TEMP.match(entry.name)
        if not match or match["name"] != path.name or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.warning("removed %s, left by a writer (pid %s) that no longer runs", entry, match["pid"])
        removed.append(entry)
    return removed


def temp_sibling(path: str | os.PathLike[str], tag: str = "") -> Path:
    """A hidden name in the same directory (same filesystem, so the final rename is atomic). Stale temporaries of
    the same path, left by a writer that was killed, are removed first."""
    path = Path(path)
    remove_stale_temps(path)
    return path.with_name(f".{path.name}.tmp{tag}-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", durable: bool = False,
                buffering: int = -1) -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path`; rename it onto `path` only if the block finishes without error.

    A cancelled or failed job never leaves `path` half written. `durable=True` also fsyncs before the rename (safe
    against power loss); it is off by default because it costs ~40% of a large sequential copy (C4 consolidation).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode, buffering=buffering) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write pretty JSON atomically; NaN and Infinity are refused (they are not JSON, and a NaN result is a bug)."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    with atomic_open(path, "w") as handle:
        handle.write(text)
        handle.write("\n")
