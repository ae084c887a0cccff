"""A cheap identity of a file: its size and a sha256 of its first and last MiB (the whole file up to 4 MiB).

Reading 2 MiB costs milliseconds on a multi-GB file, and any truncation, re-export or other run's output changes it
(sizes of Megatron .bin/.idx files follow their token and document counts; their first MiB holds the header and the
first lengths). A full sha256 reads the whole file (1.3 GB/s on the dev machine, docs/performance.md).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

EDGE = 1 << 20


def file_identity(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= 4 * EDGE:
            digest.update(handle.read())
        else:
            digest.update(handle.read(EDGE))
            handle.seek(size - EDGE)
            digest.update(handle.read(EDGE))
    return {"size": size, "sha256_edges": digest.hexdigest()}
