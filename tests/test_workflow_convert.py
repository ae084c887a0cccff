"""The conversion stage inside the default demo run: the demo model is converted and passes the parity gate."""
from __future__ import annotations

import json

import yaml


def test_demo_conversion_passes_parity(demo_run):
    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    parity = json.loads((demo_run / "results/convert/parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= config["convert"]["tolerance"]
    assert parity["argmax_agreement"] == 1.0
    assert parity["logits_shape"][-1] == config["demo"]["llama_vocab_size"]
    meta = json.loads((demo_run / "results/convert/llama_mcore/model_config.json").read_text())
    # The conversion's layout is the LoRA run's (workflow_scripts/dag/train_jobs.py conversion).
    lora = json.loads((demo_run / "results/train/lora/seed1234/resolved_config.json").read_text())
    assert meta["tensor_model_parallel_size"] == lora["tensor_parallel"] and meta["spec"] == lora["spec"]
    assert "100.0%" in (demo_run / "logs/convert/hf_to_mcore.log").read_text()
