"""The GovReport stage in the workflow: the demo's MLPerf-format .npy files, and path (b) from packed parquet files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from conftest import copy_workflow, run_snakemake
from workflow_scripts.data.packed_parquet import read_packed


def test_demo_npy_files_match_packed_rows(demo_run):
    seq_length = yaml.safe_load((demo_run / "config.yaml").read_text())["govreport"]["seq_length"]
    for split, want_rows in (("train", None), ("validation", 173)):
        rows = np.load(demo_run / f"results/govreport/{split}.npy", allow_pickle=True)
        stats = json.loads((demo_run / f"results/govreport/{split}.stats.json").read_text())
        pack = json.loads((demo_run / f"results/govreport/packed/{split}.stats.json").read_text())
        ids, labels = read_packed(demo_run / f"results/govreport/packed/{split}.parquet")
        assert rows.dtype == object and rows.ndim == 1 and len(rows) == len(ids) == stats["rows"]
        if want_rows:
            assert len(rows) == want_rows  # the real validation split's size
        for row, row_ids, row_labels in zip(rows, ids, labels):
            assert row["input_ids"].dtype == np.int32 and row["input_ids"].shape == (seq_length,)
            assert np.array_equal(row["input_ids"], row_ids)
            assert row["loss_mask"] == (row_labels != -100).astype(int).tolist() and row["seq_start_id"] == [0]
        assert stats["dropped_examples"] == pack["dropped_examples"] > 0
        assert stats["masked_tokens"] == pack["masked_tokens"]
        assert (stats["masked_tokens"] == 0) == (split == "train")
    assert "govreport_pack" in (demo_run / "logs/govreport/pack_validation.log").read_text()


@pytest.mark.slow  # runs Snakemake on several rules: the full suite's
def test_packed_source_converts_given_parquet_files(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    rng = np.random.default_rng(0)
    for split, rows in (("train", 5), ("validation", 3)):
        ids = rng.integers(0, 32000, size=(rows, 8), dtype=np.int32)
        labels = np.where(rng.random((rows, 8)) < 0.5, -100, ids.astype(np.int64))
        pq.write_table(pa.table({"input_ids": pa.array(ids.tolist(), pa.list_(pa.int32())),
                                 "labels": pa.array(labels.tolist(), pa.list_(pa.int64()))}),
                       tmp_path / f"{split}-00000-of-00001.parquet")
    override = {"govreport": {"source": "packed", "seq_length": 8,
                              "train": str(tmp_path / "train-00000-of-00001.parquet"),
                              "validation": str(tmp_path / "validation-00000-of-00001.parquet")}}
    (workdir / "packed.yaml").write_text(yaml.safe_dump(override))
    run_snakemake(workdir, "results/govreport/train.npy", "results/govreport/validation.npy",
                  "--cores", "1", "--configfile", "packed.yaml")
    for split, rows in (("train", 5), ("validation", 3)):
        got = np.load(workdir / f"results/govreport/{split}.npy", allow_pickle=True)
        labels = pq.read_table(tmp_path / f"{split}-00000-of-00001.parquet").column("labels").to_pylist()
        assert [r["loss_mask"] for r in got] == [[int(x != -100) for x in row] for row in labels]
        stats = json.loads((workdir / f"results/govreport/{split}.stats.json").read_text())
        assert stats["rows"] == rows and stats["dropped_examples"] is None
    assert not (workdir / "results/govreport/packed").exists()  # path (b) never packs
