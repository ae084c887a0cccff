"""The OpenOrca stage inside the default demo run: outputs, filter counts against the generated plan, logs."""
from __future__ import annotations

import json

import pandas as pd
import yaml


def test_demo_outputs_match_config_and_plan(demo_run):
    config = yaml.safe_load((demo_run / "config.yaml").read_text())["openorca"]
    total, calibration = config["total_samples"], config["calibration_size"]
    prefix = demo_run / "results/openorca/open_orca_gpt4_tokenized_llama"
    plan = json.loads((demo_run / "results/demo/openorca/1M-GPT4-Augmented.parquet.plan.json").read_text())
    stats = json.loads((demo_run / "results/openorca/stats.json").read_text())
    assert stats["filter"]["removed"] == plan["removed"] and stats["filter"]["kept_per_origin"] == plan["kept_per_origin"]
    assert stats["sampled_per_origin"] == {o: total // 4 for o in ("cot", "flan", "niv", "t0")}
    sampled = pd.read_pickle(f"{prefix}.sampled_{total}.pkl")
    assert len(sampled) == total and sampled["id"].is_unique
    assert pd.read_parquet(f"{prefix}.sampled_{total}.parquet")["id"].tolist() == sampled["id"].tolist()
    calib = pd.read_pickle(f"{prefix}.calibration_{calibration}.pkl")
    assert len(calib) == calibration and set(calib["id"]) <= set(sampled["id"])
    assert "100.0%" in (demo_run / "logs/openorca/filter.log").read_text()
