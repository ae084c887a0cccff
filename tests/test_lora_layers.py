"""LoRA over megatron-core parallel linears: TP 2 equals TP 1, and the exported adapter merges to the same model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convert_models import SHAPES
from distributed import torchrun
from workflow_scripts.convert.conversion import hf_to_mcore, mcore_to_hf
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.convert.verify_conversion import hf_logits

WORKER = Path(__file__).parent / "helpers" / "workers" / "lora_tp.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("lora_tp")
    cfg, _ = SHAPES["gqa"]
    hf = write_llama(base / "hf", cfg, seed=11)
    mcore = hf_to_mcore(hf, base / "mcore", tp=1, pp=1, spec="local")
    out = {}
    for tp in (1, 2):
        torchrun(tp, WORKER, mcore, base / f"tp{tp}.pt", base / f"adapter_tp{tp}")
        out[tp] = torch.load(base / f"tp{tp}.pt")
    return base, hf, mcore, out


@pytest.mark.slow  # several processes (gloo)
def test_tp2_matches_tp1(runs):
    _, _, _, out = runs
    one, two = out[1], out[2]
    assert (one["logits"] - two["logits"]).abs().max() < 1e-5
    assert abs(one["loss"] - two["loss"]) < 1e-6
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) == 2 * 2 * 4
    for key in one["grads"]:
        assert torch.allclose(one["grads"][key], two["grads"][key], atol=1e-6, rtol=1e-4), key
        assert one["grads"][key].abs().sum() > 0, f"{key} gets no gradient"
    assert one["frozen_with_grad"] == [] and two["frozen_with_grad"] == []


@pytest.mark.slow  # its fixture runs two gloo processes
def test_exported_adapter_merges_to_the_same_logits(runs, tmp_path):
    base, hf, mcore, out = runs
    for tp in (1, 2):  # the TP-2 export is in the same global layout
        merged = mcore_to_hf(mcore, tmp_path / f"merged{tp}", lora_dir=base / f"adapter_tp{tp}")
        tokens = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
        assert (hf_logits(merged, tokens) - out[1]["logits"]).abs().max() < 1e-4
