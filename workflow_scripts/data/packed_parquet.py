"""Packed-sequence parquet files (`input_ids: list<int32>`, `labels: list<int64>`, -100 = no loss), written atomically.

The column types are those of the MLPerf GovReport dataset (regisss/scrolls_gov_report_preprocessed_mlperf_2); the
UltraChat packing writes the same layout (labels = input_ids, as TRL's ConstantLengthDataset yields).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from workflow_scripts.core.atomic import temp_sibling

IGNORE_INDEX = -100


def _schema():
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int64()))])


def _list_column(rows: np.ndarray, dtype):
    import pyarrow as pa

    n, length = rows.shape
    offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1).astype(dtype, copy=False)))


class PackedParquetWriter:
    """Append blocks of equal-length rows; the file appears under its name only after `close()` succeeds."""

    def __init__(self, path: str | Path, rows_per_group: int = 256):
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_sibling(self.path)
        self.rows_per_group = rows_per_group
        self.rows = 0
        self._writer = pq.ParquetWriter(self.tmp, _schema(), compression="zstd")

    def write(self, input_ids: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Rows of input_ids and labels; labels None means labels = input_ids (cast per row group, not copied whole)."""
        import pyarrow as pa

        if input_ids.ndim != 2 or (labels is not None and labels.shape != input_ids.shape):
            raise ValueError(f"input_ids {input_ids.shape} and labels must be equal 2-D shapes")
        for start in range(0, len(input_ids), self.rows_per_group):
            end = start + self.rows_per_group
            group_labels = input_ids[start:end] if labels is None else labels[start:end]
            table = pa.Table.from_arrays(
                [_list_column(input_ids[start:end], np.int32), _list_column(group_labels, np.int64)],
                schema=_schema(),
            )
            self._writer.write_table(table)
        self.rows += len(input_ids)

    def close(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "PackedParquetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_packed(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Both columns of a packed parquet as 2-D arrays (rows of one length); tests and tools use it."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["input_ids", "labels"])
    out = []
    for name in ("input_ids", "labels"):
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy()
        out.append(values.reshape(len(column), -1) if len(column) else values.reshape(0, 0))
    return out[0], out[1]
