"""Read raw GovReport rows (`input` = report, `output` = summary) from a local parquet or JSON-lines file, in batches.

Every refusal names the file, the column and the 1-based row (JSON lines: the line) at fault. The HF hub copy
(tau/scrolls, config gov_report) is first exported to parquet by workflow_scripts.data.govreport_hub.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.json_input import lone_surrogate
from workflow_scripts.core.parquet_input import column_values, open_parquet

COLUMNS = ("input", "output")
BATCH_ROWS = 256


@dataclass
class RowBatch:
    first_row: int  # 1-based row (or line) number of reports[0]
    reports: list[str]
    summaries: list[str]


def _check_strings(path: Path, column: str, values: list, first_row: int) -> list[str]:
    for offset, value in enumerate(values):
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise PipelineInputError(f"{path}: row {first_row + offset}: column {column!r} is {kind}, not a string")
    return values


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    import pyarrow as pa

    handle = open_parquet(path)
    names = handle.schema_arrow.names
    for column in COLUMNS:
        if column not in names:
            raise PipelineInputError(f"{path}: missing column {column!r} (columns: {', '.join(names)})")
        kind = handle.schema_arrow.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise PipelineInputError(f"{path}: column {column!r} holds {kind}, not strings")
    row = 1
    try:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=list(COLUMNS)):
            reports = _check_strings(path, "input", column_values(path, batch.column("input"), "input", row), row)
            summaries = _check_strings(path, "output", column_values(path, batch.column("output"), "output", row), row)
            yield RowBatch(row, reports, summaries)
            row += len(reports)
    except (pa.ArrowException, OSError) as err:  # a corrupt page: truncated or damaged file
        raise PipelineInputError(f"{path}: unreadable from row {row} ({err})") from err


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    reports: list[str] = []
    summaries: list[str] = []
    first = 1
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except UnicodeDecodeError as err:
                raise PipelineInputError(f"{path}: line {line_no}: invalid UTF-8 ({err.reason})") from err
            except json.JSONDecodeError as err:
                raise PipelineInputError(f"{path}: line {line_no}: malformed JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(row, dict):
                raise PipelineInputError(f"{path}: line {line_no}: not a JSON object")
            for column in COLUMNS:
                if column not in row:
                    raise PipelineInputError(f"{path}: line {line_no}: missing column {column!r}")
            if not reports:
                first = line_no
            reports.append(row["input"])
            summaries.append(row["output"])
            # Per-value check here so the message names this line, not the batch start.
            for column in COLUMNS:
                _check_strings(path, column, [row[column]], line_no)
                if problem := lone_surrogate(line, row[column]):
                    raise PipelineInputError(f"{path}: line {line_no}: column {column!r} {problem}")
            if len(reports) == batch_rows:
                yield RowBatch(first, reports, summaries)
                reports, summaries = [], []
    if reports:
        yield RowBatch(first, reports, summaries)


def iter_rows(path: str | Path, batch_rows: int = BATCH_ROWS) -> Iterator[RowBatch]:
    """Batches of (report, summary) strings; an empty file is an error (a split without rows is a wrong path)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: no such file")
    if path.suffix == ".parquet":
        batches = _parquet_batches(path, batch_rows)
    elif path.suffix in (".jsonl", ".json"):
        batches = _jsonl_batches(path, batch_rows)
    else:
        raise PipelineInputError(f"{path}: unknown format (expected .parquet, .jsonl or .json lines)")
    rows = 0
    for batch in batches:
        rows += len(batch.reports)
        yield batch
    if rows == 0:
        raise PipelineInputError(f"{path}: empty file (no rows)")
