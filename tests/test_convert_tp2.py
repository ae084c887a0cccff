"""Converted checkpoints at TP 2 and PP 2 (two gloo processes under torchrun), and megatron's own TP 2 save read back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convert_models import SHAPES, make_models
from workflow_scripts.convert.conversion import mcore_to_hf
from workflow_scripts.convert.hf_checkpoint import load_all

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "helpers"


@pytest.mark.slow  # several processes (gloo)
def test_tp2_parity_pp2_load_and_megatron_resave(tmp_path):
    models = make_models(tmp_path / "models", tp=2)
    report, resave = tmp_path / "report.json", tmp_path / "resaved"
    args = [f"{name}={hf}:{mcore}" for name, (hf, mcore) in models.items()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HELPERS)]), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(HELPERS / "convert_tp2_driver.py"), str(report), str(resave), *args],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads(report.read_text())

    assert set(result["tp2"]) == set(SHAPES)
    for name, parity in result["tp2"].items():
        assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["argmax_agreement"] == 1.0, (name, parity)
    # PP 2: each stage holds one of the two layers, with the checkpoint's values; embedding first, output last.
    assert result["pp2_stages"] == [[True, 1, True, False], [True, 1, False, True]]

    # megatron's own TP 2 writer (fc1 split per rank into gate/up chunks) reads back to the original HF weights.
    name = next(iter(models))
    back = load_all(mcore_to_hf(resave, tmp_path / "hf_back"))
    original = load_all(models[name][0])
    assert set(back) == set(original)
    assert all(torch.equal(back[k].float(), original[k].float()) for k in original)
