"""Opening an input parquet file, refused with its name when it is missing or unreadable (shared by the data stages)."""
from __future__ import annotations

from pathlib import Path


def open_parquet(path: str | Path):
    """A pyarrow ParquetFile; PipelineInputError naming the file otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .errors import PipelineInputError

    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: no such file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise PipelineInputError(f"{path}: not a readable parquet file ({err})") from err
