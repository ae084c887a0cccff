"""GovReport path (b): packed parquet (input_ids, labels) -> MLPerf .npy, as NVIDIA's convert_dataset.py does."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflow_scripts.data import govreport_npy
from workflow_scripts.core.errors import PipelineInputError

SEQ = 16


def _packed_table(rows: int, seed: int = 3) -> pa.Table:
    """Rows as the published dataset: int32 ids, int64 labels with -100 runs (prompt) and copies of the ids."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 32000, size=(rows, SEQ), dtype=np.int32)
    labels = ids.astype(np.int64)
    labels[rng.random((rows, SEQ)) < 0.4] = -100
    return pa.table({
        "input_ids": pa.array(ids.tolist(), pa.list_(pa.int32())),
        "labels": pa.array(labels.tolist(), pa.list_(pa.int64())),
    })


def test_loss_mask_is_labels_not_ignored(tmp_path):
    table = _packed_table(37)
    src = tmp_path / "validation-00000-of-00001.parquet"
    pq.write_table(table, src)
    stats = govreport_npy.convert(src, tmp_path / "validation.npy", tmp_path / "validation.stats.json", seq_length=SEQ)
    got = np.load(tmp_path / "validation.npy", allow_pickle=True)
    assert got.dtype == object and got.shape == (37,)

    # NVIDIA's conversion, re-done with pandas the way convert_dataset.py does it.
    df = pd.read_parquet(src)
    want = [{"input_ids": r["input_ids"], "loss_mask": [int(x != -100) for x in r["labels"]], "seq_start_id": [0]}
            for _, r in df.iterrows()]
    for g, w in zip(got, want):
        assert list(g.keys()) == ["input_ids", "loss_mask", "seq_start_id"]
        assert isinstance(g["input_ids"], np.ndarray) and g["input_ids"].dtype == np.int32
        assert np.array_equal(g["input_ids"], w["input_ids"])
        assert isinstance(g["loss_mask"], list) and all(type(x) is int for x in g["loss_mask"])
        assert g["loss_mask"] == w["loss_mask"] and g["seq_start_id"] == [0]
    labels = np.array(table.column("labels").to_pylist())
    assert stats["rows"] == 37 and stats["tokens"] == 37 * SEQ
    assert stats["masked_tokens"] == int((labels == -100).sum()) and stats["dropped_examples"] is None
    assert json.loads((tmp_path / "validation.stats.json").read_text()) == stats


def test_pack_stats_carry_dropped_examples(tmp_path):
    pq.write_table(_packed_table(4), tmp_path / "p.parquet")
    (tmp_path / "p.stats.json").write_text(json.dumps({"dropped_examples": 7}))
    stats = govreport_npy.convert(tmp_path / "p.parquet", tmp_path / "t.npy", tmp_path / "t.json", seq_length=SEQ,
                                  pack_stats=tmp_path / "p.stats.json")
    assert stats["dropped_examples"] == 7


@pytest.mark.parametrize(
    "table,message",
    [
        (pa.table({"input_ids": pa.array([[1] * SEQ], pa.list_(pa.int32()))}), r"missing column 'labels'"),
        (pa.table({"input_ids": pa.array([[1] * SEQ, [1] * (SEQ - 1)], pa.list_(pa.int32())),
                   "labels": pa.array([[1] * SEQ, [1] * (SEQ - 1)], pa.list_(pa.int64()))}),
         r"row 2: column 'input_ids' has 15 tokens, expected seq_length 16"),
        (pa.table({"input_ids": pa.array([[1] * SEQ, None], pa.list_(pa.int32())),
                   "labels": pa.array([[1] * SEQ, [1] * SEQ], pa.list_(pa.int64()))}), r"row 2: column 'input_ids' is null"),
        (pa.table({"input_ids": ["a"], "labels": ["b"]}), r"column 'input_ids' holds string, not lists of integers"),
        (pa.table({"input_ids": pa.array([], pa.list_(pa.int32())), "labels": pa.array([], pa.list_(pa.int64()))}),
         r"empty file"),
    ],
)
def test_bad_packed_input_leaves_nothing(tmp_path, table, message):
    src = tmp_path / "bad.parquet"
    pq.write_table(table, src)
    with pytest.raises(PipelineInputError, match=message):
        govreport_npy.convert(src, tmp_path / "out" / "t.npy", tmp_path / "out" / "t.json", seq_length=SEQ)
    assert govreport_npy.main(["--input", str(src), "--output", str(tmp_path / "out" / "t.npy"),
                               "--stats", str(tmp_path / "out" / "t.json"), "--seq-length", str(SEQ)]) == 2
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
