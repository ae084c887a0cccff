"""Convert a packed GovReport parquet (`input_ids`, `labels`) into the MLPerf NeMo `.npy` format (spec §1.4).

Output: a 1-D object array of dicts `{"input_ids": int32[seq_length], "loss_mask": [0/1 ...], "seq_start_id": [0]}`,
one per row, loadable with `np.load(path, allow_pickle=True)`; `loss_mask[t] = int(labels[t] != -100)` (the mask is
aligned with the target index, as in NVIDIA's convert_dataset.py). This is path (b) of the stage for the published
MLPerf parquet files, and the last step of path (a) after workflow_scripts.data.govreport_pack.

CLI: python -m workflow_scripts.data.govreport_npy --input P.parquet --output S.npy --stats S.stats.json
        --seq-length 8192 [--pack-stats P.stats.json]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from workflow_scripts.core.atomic import atomic_open, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.parquet_input import open_parquet
from workflow_scripts.data.packed_parquet import IGNORE_INDEX
from workflow_scripts.core.progress import Progress

log = logging.getLogger("govreport_npy")
COLUMNS = ("input_ids", "labels")


def _open(path: Path):
    import pyarrow as pa

    handle = open_parquet(path)
    schema = handle.schema_arrow
    for name in COLUMNS:
        if name not in schema.names:
            raise PipelineInputError(f"{path}: missing column {name!r} (columns: {', '.join(schema.names)})")
        kind = schema.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
            raise PipelineInputError(f"{path}: column {name!r} holds {kind}, not lists of integers")
    if handle.metadata.num_rows == 0:
        raise PipelineInputError(f"{path}: empty file (no rows)")
    return handle


def _rows_of(path: Path, column, name: str, first_row: int, seq_length: int) -> np.ndarray:
    """A [rows, seq_length] int64 view of one list column; names the row of any null or wrong-length entry."""
    if column.null_count:
        bad = next(i for i, valid in enumerate(column.is_valid().to_pylist()) if not valid)
        raise PipelineInputError(f"{path}: row {first_row + bad}: column {name!r} is null")
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != seq_length)
    if len(wrong):
        row = int(wrong[0])
        raise PipelineInputError(
            f"{path}: row {first_row + row}: column {name!r} has {lengths[row]} tokens, expected seq_length {seq_length}"
        )
    values = column.flatten()
    if values.null_count:
        raise PipelineInputError(f"{path}: rows {first_row}..: column {name!r} holds a null token")
    return values.to_numpy().astype(np.int64, copy=False).reshape(len(column), seq_length)


def _read_rows(input_path: Path, handle, seq_length: int) -> tuple[list[dict], int, int]:
    """(rows as the .npy holds them, tokens, loss tokens); a corrupt page (truncated or damaged file) names the row."""
    import pyarrow as pa

    rows: list[dict] = []
    tokens = loss_tokens = 0
    progress = Progress(log, f"convert {input_path.name}", handle.metadata.num_rows)
    try:
        for batch in handle.iter_batches(batch_size=256, columns=list(COLUMNS)):
            first = len(rows) + 1
            ids = _rows_of(input_path, batch.column("input_ids"), "input_ids", first, seq_length)
            labels = _rows_of(input_path, batch.column("labels"), "labels", first, seq_length)
            if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
                raise PipelineInputError(f"{input_path}: rows {first}..{first + len(ids) - 1}: input_ids outside int32 range")
            mask = (labels != IGNORE_INDEX).astype(np.int64)
            for row_ids, row_mask in zip(ids.astype(np.int32), mask):
                rows.append({"input_ids": row_ids, "loss_mask": row_mask.tolist(), "seq_start_id": [0]})
            tokens += ids.size
            loss_tokens += int(mask.sum())
            progress.update(len(rows), rows=len(rows))
    except (pa.ArrowException, OSError) as err:
        raise PipelineInputError(f"{input_path}: unreadable from row {len(rows) + 1} ({err})") from err
    return rows, tokens, loss_tokens


def convert(input_path: Path, output: Path, stats_path: Path, *, seq_length: int, pack_stats: Path | None = None) -> dict:
    input_path = Path(input_path)
    rows, tokens, loss_tokens = _read_rows(input_path, _open(input_path), seq_length)
    array = np.empty(len(rows), dtype=object)
    array[:] = rows
    with atomic_open(output, "wb") as handle_out:
        np.save(handle_out, array, allow_pickle=True)
    dropped = None
    if pack_stats is not None and Path(pack_stats).is_file():
        dropped = json.loads(Path(pack_stats).read_text()).get("dropped_examples")
    stats = {
        "input": str(input_path),
        "rows": len(rows),
        "seq_length": seq_length,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "masked_tokens": tokens - loss_tokens,
        # Known only when this workflow packed the rows (path a); the published parquet does not say.
        "dropped_examples": dropped,
    }
    write_json(stats_path, stats)
    return stats


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--pack-stats", type=Path, help="stats of govreport_pack (path a), for dropped_examples")
    args = parser.parse_args(argv)
    stats = convert(args.input, args.output, args.stats, seq_length=args.seq_length, pack_stats=args.pack_stats)
    log.info("done: %s", json.dumps(stats))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
