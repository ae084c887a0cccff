"""Opening an input parquet file, refused with its name when it is missing or unreadable (shared by the data stages),
and reading its string columns with the row of any text that is not UTF-8 named."""
from __future__ import annotations

from pathlib import Path

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import refuse_lfs_pointer


def open_parquet(path: str | Path):
    """A pyarrow ParquetFile; PipelineInputError naming the file otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PipelineInputError(f"{path}: empty file")
    refuse_lfs_pointer(path)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise PipelineInputError(f"{path}: not a readable parquet file ({err})") from err


def column_values(path: Path, array, column: str, first_row: int, row_note: str = "") -> list:
    """`array.to_pylist()`. Parquet does not check that string data is UTF-8, so a bad string first shows up here as
    a UnicodeDecodeError; it fails naming the file, the row (`first_row` = number of the array's first row, in the
    caller's numbering, `row_note` e.g. " (0-based)") and the column."""
    try:
        return array.to_pylist()
    except UnicodeDecodeError:
        pass
    for offset in range(len(array)):  # error path only: find the row
        try:
            array[offset].as_py()
        except UnicodeDecodeError as err:
            raise PipelineInputError(f"{path}: row {first_row + offset}{row_note}: column {column!r} is not valid "
                                     f"UTF-8 ({err.reason} at byte {err.start})") from None
    raise PipelineInputError(f"{path}: rows {first_row}..{first_row + len(array) - 1}{row_note}: column {column!r} "
                             "is not valid UTF-8")
