"""A tokenized Megatron set `<prefix>.bin`, `.idx`, `.stats.json` is published as one: the tokenizer writes
stats.json last, with the identity (size, sha256 of the first and last MiB; whole files up to 4 MiB) of the .bin and
.idx it describes, and every reader checks it before use. A set whose files come from two runs (a job killed between
its renames, a file copied over by hand) or that has no stats.json is refused in one line naming the files.

Why not a full sha256: real .bin files are tens of GB and every training rank reads the set; a full hash would read
all of them on every rank (docs/performance.md has the measured costs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.file_identity import file_identity

EXTENSIONS = ("bin", "idx")
FILES_KEY = "files"  # in stats.json: {"bin": identity, "idx": identity}


def set_paths(prefix: str | Path) -> dict[str, Path]:
    return {ext: Path(f"{prefix}.{ext}") for ext in (*EXTENSIONS, "stats.json")}


def identities(prefix: str | Path) -> dict[str, Any]:
    """What stats.json records of the .bin and .idx at `prefix` (the tokenizer computes it on its temporaries)."""
    return {ext: file_identity(path) for ext, path in set_paths(prefix).items() if ext in EXTENSIONS}


def read_stats(prefix: str | Path) -> dict[str, Any]:
    """stats.json of the set at `prefix`, after checking that its .bin and .idx are the files it describes."""
    paths = set_paths(prefix)
    data = ", ".join(str(paths[ext]) for ext in EXTENSIONS)
    rerun = "tokenize it again (rule c4_tokenize)"
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise PipelineInputError(f"{', '.join(missing)}: missing; {data} are not a complete tokenized set; {rerun}")
    try:
        stats = json.loads(paths["stats.json"].read_text())
        recorded = stats[FILES_KEY]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise PipelineInputError(f"{paths['stats.json']}: no sizes and hashes of {data} (not written by this "
                                 f"pipeline's tokenizer, or an older one); {rerun}") from err
    differ = [ext for ext in EXTENSIONS if file_identity(paths[ext]) != recorded.get(ext)]
    if differ:
        named = " and ".join(str(paths[ext]) for ext in differ)
        raise PipelineInputError(f"{named}: not the file{'s' if len(differ) > 1 else ''} that {paths['stats.json']} "
                                 f"describes (size or sha256 differ): a mixed set from two tokenization runs; {rerun}")
    return stats
