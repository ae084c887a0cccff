"""Equal sampling per origin and the calibration subset, as processorca.py (the llama2-70b evaluation dataset).

Reference: the filtered frame is split with `groupby("origin")` (origins in sorted order), each origin is sampled with
`DataFrame.sample(n=total // n_origins, random_state=1337)`, the samples are concatenated in that order and
re-indexed; the calibration set is `sampled.sample(n=1000, random_state=12345)`, re-indexed. pandas' `sample` depends
only on the number of rows, n and the seed, so the same calls are made here on row numbers, and only the chosen rows
are read back from the filtered parquet (memory bounded by the sample, not the filtered set).

Outputs: the sampled pickle with the reference's columns (Python lists of ints for the tokens, object dtype for text,
as the reference's pandas wrote them), a parquet copy, the calibration pickle and a stats JSON (the filter counts
included). CLI:
python -m workflow_scripts.data.openorca_sample --input FULL.parquet --filter-stats F.json --total-samples 24576
    --calibration-size 1000 --seed 1337 --calibration-seed 12345 --output S.pkl --output-parquet S.parquet
    --calibration C.pkl --stats stats.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.core.atomic import atomic_open, temp_sibling, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.openorca_filter import OUTPUT_SCHEMA

log = logging.getLogger("openorca_sample")
SAMPLE_SEED = 1337
CALIBRATION_SEED = 12345
TEXT_COLUMNS = ("id", "system_prompt", "question", "output", "input", "origin")
TOKEN_COLUMNS = ("tok_input", "tok_output")


def sample_rows(origins: Sequence[str], total: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Row numbers (into the filtered set) of the evaluation set, in the reference's order."""
    origins = np.asarray(origins, dtype=object)
    names = sorted(set(origins.tolist()))
    if not names:
        raise PipelineInputError("openorca.total_samples: the filtered set is empty, nothing to sample")
    if total % len(names):
        raise PipelineInputError(
            f"openorca.total_samples: {total} is not divisible by the number of origins ({len(names)}: {', '.join(names)})"
        )
    per_origin = total // len(names)
    chosen = []
    for name in names:
        rows = np.flatnonzero(origins == name)
        if len(rows) < per_origin:
            raise PipelineInputError(
                f"openorca.total_samples: origin {name!r} has {len(rows)} rows after filtering, "
                f"{per_origin} needed ({per_origin - len(rows)} more)"
            )
        picks = pd.Series(rows).sample(n=per_origin, random_state=seed)  # pandas' own sampler, as the reference
        chosen.append(picks.to_numpy())
    return np.concatenate(chosen)


def calibration_rows(n_sampled: int, size: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Positions (into the sampled set) of the calibration subset, in the reference's order."""
    if not 0 < size <= n_sampled:
        raise PipelineInputError(f"openorca.calibration_size: {size} must be between 1 and the {n_sampled} sampled rows")
    return pd.Series(np.arange(n_sampled)).sample(n=size, random_state=seed).to_numpy()


def take_rows(path: Path, rows: np.ndarray) -> pa.Table:
    """The given row numbers of a parquet file, in the given order, reading one record batch at a time."""
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    pieces, start, k = [], 0, 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=16384):
        end = start + batch.num_rows
        stop = int(np.searchsorted(wanted, end))
        if stop > k:
            pieces.append(batch.take(pa.array(wanted[k:stop] - start)))
            k = stop
        start = end
    table = pa.Table.from_batches(pieces, schema=OUTPUT_SCHEMA)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return table.take(pa.array(inverse))


def to_reference_frame(table: pa.Table) -> pd.DataFrame:
    """A RangeIndex frame with the reference's columns and Python objects (str, list of int) in the cells."""
    data = {}
    for field in OUTPUT_SCHEMA:
        values = table.column(field.name).to_pylist()
        if field.name in TEXT_COLUMNS or field.name in TOKEN_COLUMNS:
            data[field.name] = pd.Series(values, dtype=object)
        else:
            data[field.name] = pd.Series(values, dtype="int64")
    return pd.DataFrame(data)


def write_pickle(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        frame.to_pickle(handle)


def write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sample_dataset(
    full: Path,
    filter_stats: Path,
    *,
    total: int,
    calibration_size: int,
    seed: int,
    calibration_seed: int,
    output: Path,
    output_parquet: Path,
    calibration: Path,
    stats_path: Path,
) -> dict:
    origins = pq.read_table(full, columns=["origin"]).column("origin").to_pylist()
    rows = sample_rows(origins, total, seed)
    calib = calibration_rows(len(rows), calibration_size, calibration_seed)
    sampled = take_rows(full, rows)
    frame = to_reference_frame(sampled)
    calib_frame = frame.iloc[calib].reset_index(drop=True)
    write_pickle(frame, output)
    write_parquet(sampled, output_parquet)
    write_pickle(calib_frame, calibration)
    stats = {
        "filter": json.loads(filter_stats.read_text()),
        "sampled": len(frame),
        "sampled_per_origin": {k: int(v) for k, v in frame["origin"].value_counts().sort_index().items()},
        "calibration": len(calib_frame),
        "seed": seed,
        "calibration_seed": calibration_seed,
        "tok_input_length_mean": round(float(frame["tok_input_length"].mean()), 3),
        "tok_output_length_mean": round(float(frame["tok_output_length"].mean()), 3),
        "outputs": [str(output), str(output_parquet), str(calibration)],
    }
    write_json(stats_path, stats)
    return stats


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="filtered rows from openorca_filter")
    parser.add_argument("--filter-stats", type=Path, required=True)
    parser.add_argument("--total-samples", type=int, required=True)
    parser.add_argument("--calibration-size", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--calibration-seed", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True, help="sampled pickle")
    parser.add_argument("--output-parquet", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True, help="calibration pickle")
    parser.add_argument("--stats", type=Path, required=True)
    return parser.parse_args(argv)


def _body(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    stats = sample_dataset(
        args.input, args.filter_stats, total=args.total_samples, calibration_size=args.calibration_size,
        seed=args.seed, calibration_seed=args.calibration_seed, output=args.output,
        output_parquet=args.output_parquet, calibration=args.calibration, stats_path=args.stats,
    )
    log.info("done: %s", json.dumps(stats))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
