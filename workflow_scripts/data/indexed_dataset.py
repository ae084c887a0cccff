"""A streaming writer of Megatron's indexed dataset (`.bin`/`.idx`, "MMIDIDX" version 1).

Byte-identical to megatron-core's `IndexedDatasetBuilder` for one-sequence-per-document data (tests compare both), but
its memory does not grow with the corpus: per-sequence lengths are spilled to a side file and the index arrays are
written in chunks at `finalize`.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# Megatron's DType codes (megatron.core.datasets.indexed_dataset.DType).
DTYPE_CODES: dict[type, int] = {
    np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7, np.uint16: 8,
}
_CHUNK = 1 << 20  # sequences per chunk when writing the index


def optimal_dtype(vocab_size: int) -> type:
    """uint16 when every id fits with room to spare (Megatron's rule), else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


class IndexedDatasetWriter:
    """Append documents, then `finalize()`. Files go to `<prefix>.bin` / `<prefix>.idx` exactly as given."""

    def __init__(self, prefix: str | os.PathLike[str], dtype: type):
        if dtype not in DTYPE_CODES:
            raise ValueError(f"unsupported dtype {dtype}")
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._max = np.iinfo(self.dtype).max if np.issubdtype(self.dtype, np.integer) else None
        self._bin: BinaryIO = open(f"{self.prefix}.bin", "wb")
        self._lengths_path = Path(f"{self.prefix}.lengths.tmp")
        self._lengths: BinaryIO = open(self._lengths_path, "wb")
        self.sequences = 0
        self.tokens = 0

    def add_documents(self, flat_ids: np.ndarray, lengths: np.ndarray) -> None:
        """Add len(lengths) documents whose token ids are concatenated in `flat_ids` (one sequence each)."""
        lengths = np.asarray(lengths, dtype=np.int32)
        if int(lengths.sum()) != len(flat_ids):
            raise ValueError("lengths do not add up to the number of ids")
        if self._max is not None and len(flat_ids) and (flat_ids.max() > self._max or flat_ids.min() < 0):
            raise ValueError(f"token id outside the range of {self.dtype}")
        self._bin.write(np.ascontiguousarray(flat_ids, dtype=self.dtype).tobytes(order="C"))
        self._lengths.write(lengths.astype("<i4").tobytes())
        self.sequences += len(lengths)
        self.tokens += int(len(flat_ids))

    def finalize(self) -> None:
        """Write `<prefix>.idx`; layout: header, lengths int32[S], pointers int64[S], document indices int64[S+1]."""
        self._bin.close()
        self._lengths.close()
        count = self.sequences
        itemsize = self.dtype.itemsize
        with open(f"{self.prefix}.idx", "wb") as idx, open(self._lengths_path, "rb") as lengths_file:
            idx.write(INDEX_MAGIC)
            idx.write(struct.pack("<Q", INDEX_VERSION))
            idx.write(struct.pack("<B", DTYPE_CODES[self.dtype.type]))
            idx.write(struct.pack("<Q", count))
            idx.write(struct.pack("<Q", count + 1))
            for chunk in _chunks(lengths_file):
                idx.write(chunk.tobytes())
            lengths_file.seek(0)
            offset = 0
            for chunk in _chunks(lengths_file):
                ends = np.cumsum(chunk, dtype=np.int64) * itemsize + offset
                starts = np.empty_like(ends)
                starts[0] = offset
                starts[1:] = ends[:-1]
                idx.write(starts.astype("<i8").tobytes())
                offset = int(ends[-1])
            # One sequence per document: document indices are 0, 1, ..., S.
            for start in range(0, count + 1, _CHUNK):
                idx.write(np.arange(start, min(count + 1, start + _CHUNK), dtype="<i8").tobytes())
        self._lengths_path.unlink()

    def abort(self) -> None:
        """Close and delete everything written so far."""
        for handle in (self._bin, self._lengths):
            handle.close()
        for path in (Path(f"{self.prefix}.bin"), Path(f"{self.prefix}.idx"), self._lengths_path):
            path.unlink(missing_ok=True)


def read_back(prefix: str | os.PathLike[str]) -> tuple[int, int]:
    """(documents, tokens) as a reader of this format sees `<prefix>.idx` / `.bin`: header, dtype, counts and the
    .bin size the lengths imply. A cheap check of what was just written, without importing megatron-core (about 5 s
    a job); that megatron-core reads these bytes is what tests/test_indexed_dataset.py proves."""
    idx, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    with open(idx, "rb") as handle:
        header = handle.read(len(INDEX_MAGIC) + 8 + 1 + 8 + 8)
        if len(header) < 34 or header[:9] != INDEX_MAGIC:
            raise ValueError(f"{idx}: not an MMIDIDX index")
        version, code, count, doc_count = struct.unpack("<QBQQ", header[9:])
        codes = {c: t for t, c in DTYPE_CODES.items()}
        if version != INDEX_VERSION or code not in codes or doc_count != count + 1:
            raise ValueError(f"{idx}: version {version}, dtype code {code}, {count} sequences, {doc_count} document "
                             "indices: not what this writer writes")
        lengths = np.fromfile(handle, dtype="<i4", count=count)
    tokens = int(lengths.sum(dtype=np.int64))
    expected = 34 + count * (4 + 8) + (count + 1) * 8
    if len(lengths) != count or idx.stat().st_size != expected:
        raise ValueError(f"{idx}: {idx.stat().st_size} bytes, {expected} expected for {count} sequences")
    if bin_path.stat().st_size != tokens * np.dtype(codes[code]).itemsize:
        raise ValueError(f"{bin_path}: {bin_path.stat().st_size} bytes, the index's {tokens} tokens need "
                         f"{tokens * np.dtype(codes[code]).itemsize}")
    return count, tokens


def _chunks(handle: BinaryIO):
    while True:
        data = handle.read(_CHUNK * 4)
        if not data:
            return
        yield np.frombuffer(data, dtype="<i4")
