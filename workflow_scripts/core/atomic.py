"""Outputs appear complete or not at all: write to a temporary sibling, rename when done."""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any, Iterator

from workflow_scripts.core.errors import DiskFullError, PipelineInputError

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


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Write failures that carry no errno. torch's zip writer (torch.save to a path) says "[enforce fail at
# inline_container.cc:858] . PytorchStreamWriter failed writing file data/37: file write failed" or "[enforce fail at
# inline_container.cc:664] . unexpected pos 56833600 vs 56833492" (a full disk, in practice; its reader's errors, also
# from inline_container.cc, are not matched); safetensors says "Error while serializing: I/O error: No space left on
# device (os error 28)".
_TORCH_WRITER_FAILURES = ("PytorchStreamWriter failed", "unexpected pos")
_NO_SPACE_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def _causes(err: BaseException) -> Iterator[BaseException]:
    """The error, what it was raised from, and the per-rank failures that torch.distributed.checkpoint wraps."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]
        failures = getattr(current, "failures", None)
        if isinstance(failures, dict):
            todo += [f[0] if isinstance(f, tuple) else f for f in failures.values()]


def is_disk_full(err: BaseException) -> bool:
    for cause in _causes(err):
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return True
        text = str(cause)
        if "inline_container.cc" in text and any(failure in text for failure in _TORCH_WRITER_FAILURES):
            return True
        if any(no_space in text for no_space in _NO_SPACE_TEXTS):
            return True
    return False


@contextlib.contextmanager
def naming_full_disk(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a write that ran out of space (an errno, or torch's message without one) into one line naming `path`."""
    try:
        yield
    except (PipelineInputError, KeyboardInterrupt, SystemExit):  # bad input (or already named) stays as it is
        raise
    except BaseException as err:  # torch.distributed.checkpoint's CheckpointException is a BaseException
        if not is_disk_full(err):
            raise
        raise DiskFullError(f"No space left on device writing {path}") from err
