"""Our streaming .bin/.idx writer is byte-identical to megatron-core's IndexedDatasetBuilder and readable by it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from workflow_scripts.data import indexed_dataset
from workflow_scripts.data.indexed_dataset import IndexedDatasetWriter, optimal_dtype


def _random_docs(rng, count, high):
    return [rng.integers(0, high, size=int(rng.integers(1, 50))).tolist() for _ in range(count)]


@pytest.mark.parametrize("dtype,high", [(np.uint16, 65000), (np.int32, 200_000)])
@pytest.mark.parametrize("count", [0, 1, 257])
def test_same_bytes_as_megatron_builder(tmp_path, dtype, high, count, monkeypatch):
    monkeypatch.setattr(indexed_dataset, "_CHUNK", 64)  # exercise the chunked index writing
    docs = _random_docs(np.random.default_rng(count), count, high)
    ours = IndexedDatasetWriter(tmp_path / "ours", dtype)
    for start in range(0, count, 100):  # batches of documents, as the tokenizer feeds them
        batch = docs[start : start + 100]
        ours.add_documents(np.array([t for d in batch for t in d], dtype=dtype), np.array([len(d) for d in batch]))
    ours.finalize()
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype)
    for doc in docs:
        ref.add_item(torch.tensor(doc, dtype=torch.int64))
        ref.end_document()
    ref.finalize(str(tmp_path / "ref.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"ref.{ext}").read_bytes()
    assert not (tmp_path / "ours.lengths.tmp").exists()
    if count == 0:
        return  # megatron-core cannot mmap an empty .bin; the tokenizer refuses files without documents
    read = IndexedDataset(str(tmp_path / "ours"))
    assert len(read) == count
    assert all(read[i].tolist() == docs[i] for i in range(count))


def test_index_layout_matches_spec(tmp_path):
    """Header fields at the offsets of mlperf-spec §3.1: 34 + 12*S + 8*D bytes for S sequences, D = S + 1."""
    writer = IndexedDatasetWriter(tmp_path / "x", np.uint16)
    writer.add_documents(np.array([1, 2, 3, 4, 5, 6], dtype=np.uint16), np.array([3, 2, 1]))
    writer.finalize()
    idx = (tmp_path / "x.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00" and idx[9:17] == (1).to_bytes(8, "little") and idx[17] == 8
    assert int.from_bytes(idx[18:26], "little") == 3 and int.from_bytes(idx[26:34], "little") == 4
    assert len(idx) == 34 + 12 * 3 + 8 * 4
    assert np.frombuffer(idx[34 + 12:34 + 36], dtype="<i8").tolist() == [0, 6, 10]


def test_dtype_rule():
    assert optimal_dtype(32000) is np.uint16 and optimal_dtype(65499) is np.uint16
    assert optimal_dtype(65500) is np.int32 and optimal_dtype(128256) is np.int32


def test_out_of_range_ids_are_refused(tmp_path):
    writer = IndexedDatasetWriter(tmp_path / "x", np.uint16)
    with pytest.raises(ValueError, match="outside the range"):
        writer.add_documents(np.array([70000], dtype=np.int64), np.array([1]))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_read_back_agrees_with_megatron_and_refuses_damaged_files(tmp_path):
    """The tokenizer's own read-back (no megatron import in the job) sees what megatron-core's reader sees, and a cut
    or padded .bin, a cut .idx or a foreign header is refused naming the file."""
    from workflow_scripts.data.indexed_dataset import read_back

    docs = _random_docs(np.random.default_rng(5), 40, 60000)
    writer = IndexedDatasetWriter(tmp_path / "x", np.uint16)
    writer.add_documents(np.array([t for d in docs for t in d], dtype=np.uint16), np.array([len(d) for d in docs]))
    writer.finalize()
    megatron = IndexedDataset(str(tmp_path / "x"))
    assert read_back(tmp_path / "x") == (len(megatron), int(megatron.sequence_lengths.sum()))
    bin_bytes, idx_bytes = (tmp_path / "x.bin").read_bytes(), (tmp_path / "x.idx").read_bytes()
    for name, data, damaged in (("x.bin", bin_bytes, bin_bytes[:-2]), ("x.bin", bin_bytes, bin_bytes + b"\0\0"),
                                ("x.idx", idx_bytes, idx_bytes[:-8]), ("x.idx", idx_bytes, b"NOTANIDX" + idx_bytes[8:])):
        (tmp_path / name).write_bytes(damaged)
        with pytest.raises(ValueError, match=str(tmp_path / name)):
            read_back(tmp_path / "x")
        (tmp_path / name).write_bytes(data)
