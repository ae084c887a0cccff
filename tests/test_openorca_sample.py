"""Equal sampling per origin (seed 1337) and the calibration subset (seed 12345): deterministic, in reference order."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.openorca_filter import OUTPUT_SCHEMA
from workflow_scripts.data.openorca_sample import calibration_rows, sample_dataset, sample_rows, take_rows

ORIGINS = ["t0", "cot", "niv", "flan", "cot", "t0", "flan", "niv"] * 25 + ["cot"] * 7  # interleaved, unequal


def test_sampling_is_numpy_randomstate_per_sorted_origin():
    rows = sample_rows(ORIGINS, 40, seed=1337)
    origins = np.array(ORIGINS)
    expected = []
    for name in ["cot", "flan", "niv", "t0"]:  # groupby order
        members = np.flatnonzero(origins == name)
        expected.extend(members[np.random.RandomState(1337).permutation(len(members))[:10]])
    assert rows.tolist() == expected
    assert sample_rows(ORIGINS, 40, seed=1337).tolist() == rows.tolist()
    assert sample_rows(ORIGINS, 40, seed=1338).tolist() != rows.tolist()


def test_calibration_is_numpy_randomstate_over_the_sample():
    picks = calibration_rows(400, 40, seed=12345)
    assert picks.tolist() == np.random.RandomState(12345).permutation(400)[:40].tolist()
    assert calibration_rows(400, 40, seed=12345).tolist() == picks.tolist()


@pytest.mark.parametrize(
    "total,message",
    [(42, "42 is not divisible by the number of origins (4: cot, flan, niv, t0)"),
     (4 * 51, "origin 'flan' has 50 rows after filtering, 51 needed (1 more)")],
)
def test_impossible_totals_name_the_config_key(total, message):
    with pytest.raises(PipelineInputError, match="openorca.total_samples") as err:
        sample_rows(ORIGINS, total)
    assert message in str(err.value)


def _full_parquet(path, n):
    rows = {
        "id": [f"{o}.{i}" for i, o in enumerate(ORIGINS[:n])], "system_prompt": ["s"] * n, "question": ["q"] * n,
        "output": ["o"] * n, "input": ["i"] * n, "tok_input": [[1, 1, i] for i in range(n)],
        "tok_output": [[1, i, i] for i in range(n)], "origin": ORIGINS[:n], "tok_input_length": [3] * n,
        "tok_output_length": [3] * n,
    }
    pq.write_table(pa.table(rows, schema=OUTPUT_SCHEMA), path, row_group_size=16)
    return path


def test_take_rows_keeps_the_requested_order_across_batches(tmp_path):
    path = _full_parquet(tmp_path / "full.parquet", 207)
    rows = np.array([200, 3, 150, 17, 0, 99])
    assert take_rows(path, rows).column("id").to_pylist() == [f"{ORIGINS[i]}.{i}" for i in rows]


def test_failed_sampling_writes_nothing(tmp_path):
    path = _full_parquet(tmp_path / "full.parquet", 207)
    (tmp_path / "filter.json").write_text("{}")
    out = tmp_path / "out"
    with pytest.raises(PipelineInputError, match="openorca.calibration_size"):
        sample_dataset(path, tmp_path / "filter.json", total=40, calibration_size=41, seed=1337, calibration_seed=12345,
                       output=out / "s.pkl", output_parquet=out / "s.parquet", calibration=out / "c.pkl",
                       stats_path=out / "stats.json")
    assert not out.exists() or not any(out.iterdir())
