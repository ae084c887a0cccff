"""MLPerf Inference accuracy log (mlperf_log_accuracy.json): [{"seq_id", "qsl_idx", "data": hex of the ids}, ...],
as LoadGen writes it (the generation's answers, int32 bytes), and the sample list (QSL) it indexes: generation reads
its prompts, scoring its reference answers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.errors import PipelineInputError

DTYPE = "int32"  # the reference README evaluates with --dtype int32


def read_sample_column(samples: Path | str, column: str) -> list:
    """One column of the sampled evaluation set (.pkl as processorca.py writes it, or .parquet), in qsl_idx order."""
    import pandas as pd

    samples = Path(samples)
    if not samples.is_file():
        raise PipelineInputError(f"{samples}: sample list missing")
    frame = pd.read_pickle(samples) if samples.suffix == ".pkl" else pd.read_parquet(samples)
    if column not in frame.columns:
        raise PipelineInputError(f"{samples}: no {column!r} column (columns: {', '.join(map(str, frame.columns))})")
    return frame[column].tolist()


def write_accuracy_log(path: Path | str, outputs: Iterable[tuple[int, Sequence[int]]],
                       dtype: str = DTYPE) -> int:
    """Write (qsl_idx, ids) pairs atomically as the LoadGen accuracy log does; returns the number of entries."""
    entries = [{"seq_id": n, "qsl_idx": int(idx), "data": np.asarray(ids, dtype=dtype).tobytes().hex().upper()}
               for n, (idx, ids) in enumerate(outputs)]
    with atomic_open(path, "w") as handle:
        json.dump(entries, handle)
        handle.write("\n")
    return len(entries)


def read_accuracy_log(path: Path | str, dtype: str = DTYPE, vocab_size: int | None = None) -> dict[int, list[int]]:
    """qsl_idx -> generated ids; duplicated qsl_idx keep their first entry (as evaluate-accuracy.py). With
    `vocab_size`, an id outside [0, vocab_size) is refused: decoding would drop it silently and score the rest."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: accuracy log missing")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:  # a LoadGen log cut short (its run did not end) fails here
        raise PipelineInputError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    except UnicodeDecodeError as err:
        raise PipelineInputError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    if not isinstance(entries, list):
        raise PipelineInputError(f"{path}: expected a JSON list of {{qsl_idx, data}} entries")
    generated: dict[int, list[int]] = {}
    for number, entry in enumerate(entries):
        try:
            idx, data = int(entry["qsl_idx"]), entry["data"]
            ids = np.frombuffer(bytes.fromhex(data), dtype)
        except (KeyError, TypeError, ValueError) as err:
            raise PipelineInputError(f"{path}: entry {number}: bad accuracy-log entry ({err})") from None
        if vocab_size is not None:
            _check_vocabulary(path, number, idx, ids, vocab_size)
        generated.setdefault(idx, ids.tolist())
    return generated


def _check_vocabulary(path: Path, number: int, idx: int, ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise PipelineInputError(f"{path}: entry {number} (qsl_idx {idx}): token id {bad} is outside the tokenizer's "
                                 f"vocabulary (0..{vocab_size - 1})")
