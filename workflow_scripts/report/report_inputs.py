"""Readers for the report's plots: training CSVs, stats/parity JSONs and rule benchmark TSVs, checked so that a bad
file fails with its name, line and column instead of a matplotlib traceback."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.json_input import read_json_object

NOT_MEASURED = ("", "NA")


def read_json(path: Path | str, required: Sequence[str] = ()) -> dict[str, Any]:
    data = read_json_object(path)
    missing = [k for k in required if k not in data]
    if missing:
        raise PipelineInputError(f"{path}: lacks key(s) {', '.join(missing)}")
    return data


def read_numeric_table(path: Path | str, columns: Sequence[str], delimiter: str = ",") -> dict[str, list[float]]:
    """The named columns of a CSV/TSV as floats; an empty or NA cell is NaN (not measured at that step or by psutil)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: file missing")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise PipelineInputError(f"{path}: line 1: header lacks column(s) {', '.join(missing)}")
        values: dict[str, list[float]] = {c: [] for c in columns}
        for row in reader:
            for column in columns:
                cell = row[column]
                if cell is None:
                    raise PipelineInputError(f"{path}: line {reader.line_num}: too few fields (no {column!r})")
                try:
                    values[column].append(float(cell) if cell.strip() not in NOT_MEASURED else math.nan)
                except ValueError:
                    raise PipelineInputError(
                        f"{path}: line {reader.line_num}: column {column!r}: not a number: {cell!r}") from None
    return values


@dataclass(frozen=True)
class BenchmarkRow:
    """One `benchmark:` file: the job it timed (file name), its wall time and peak memory (Snakemake's TSV)."""
    job: str
    wall_s: float
    max_rss_mb: float
    repeats: int


def read_benchmark(path: Path | str) -> BenchmarkRow:
    """Mean wall time and largest max_rss over the file's repeats; `max_rss` is NA where psutil could not read it."""
    path = Path(path)
    table = read_numeric_table(path, ("s", "max_rss"), delimiter="\t")
    if not table["s"]:
        raise PipelineInputError(f"{path}: benchmark file has no measurement rows")
    rss = [v for v in table["max_rss"] if not math.isnan(v)]
    return BenchmarkRow(job=path.name.removesuffix(".tsv"), wall_s=sum(table["s"]) / len(table["s"]),
                        max_rss_mb=max(rss) if rss else math.nan, repeats=len(table["s"]))


def read_benchmarks(paths: Sequence[Path | str]) -> list[BenchmarkRow]:
    """Sorted by job name, so the figure does not depend on the order of the files on the command line."""
    return sorted((read_benchmark(p) for p in paths), key=lambda row: row.job)
