"""The CUDA-graph option's CPU-checkable parts: what it refuses, by name, and the mask its replay is given.
Capture and replay themselves run on the GPU (benchmarks/cuda_graph_parity.py: graphed and eager losses per step)."""
import pytest
import torch

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.train.train_config import build_config
from workflow_scripts.train.train_cuda_graphs import causal_mask, check_cuda_graphs


@pytest.mark.parametrize("overrides,recompute,needs", [
    ({}, None, "CUDA, spec te (not local)"),
    ({"optimizer_impl": "torch"}, None, "the megatron optimizer (optimizer_impl auto or megatron, not torch)"),
    ({"pipeline_parallel": 2}, None, "pipeline_parallel 1 (not 2)"),
    ({}, "full", "recompute_activations none (resolved to full)"),
])
def test_cuda_graphs_refuse_what_they_cannot_serve_naming_it(overrides, recompute, needs):
    cfg = build_config("demo_pretrain_cpu", {"cuda_graphs": True, **overrides})
    with pytest.raises(PipelineInputError, match="train config: cuda_graphs needs") as err:
        check_cuda_graphs(cfg, recompute)
    assert needs in str(err.value)


def test_replay_mask_is_megatrons_causal_mask():
    mask = causal_mask(2, 5, torch.device("cpu"))
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == torch.bool
    future = torch.arange(5).view(1, 5) > torch.arange(5).view(5, 1)  # True where a key lies after the query
    assert torch.equal(mask[1, 0], future) and torch.equal(mask[0], mask[1])
