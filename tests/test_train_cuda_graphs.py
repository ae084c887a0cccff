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


class RecordingGraphs:
    """Stands in for LayerGraphs on CPU: records what the trainer asks of it and hands out the real replay mask."""

    def __init__(self, micro_batch_size: int, seq_length: int):
        self.mask = causal_mask(micro_batch_size, seq_length, torch.device("cpu"))
        self.events: list[str] = []

    def before_step(self, step_index: int) -> None:
        self.events.append(f"step {step_index}")

    def set_micro_batch(self, index: int) -> None:
        self.events.append(f"micro-batch {index}")


def test_trainer_gives_replays_their_step_micro_batch_index_and_mask_with_unchanged_losses(tmp_path):
    """The trainer's side of a replay: the capture hook ahead of each step, the micro-batch index (TE recasts fp8
    weights on index 0 only) and the causal mask the capture had; with that mask the losses are the maskless ones."""
    from train_fixtures import SEQ, make_model, packed_rows

    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
    from workflow_scripts.train.train_run import Trainer

    hf, mcore = make_model(tmp_path)
    train = packed_rows(tmp_path / "train.npy", 8, seed=1)
    cfg = build_config("demo_lora_cpu", {"checkpoint": str(mcore), "train_data": [str(train)],
                                         "validation_data": str(train), "seq_length": SEQ, "global_batch_size": 4,
                                         "micro_batch_size": 2, "max_steps": 2, "lora": {"dropout": 0.0}})
    losses, masks = {}, []
    for name in ("eager", "replay-shaped"):
        init_parallel(1, 1, seed=cfg.seed)
        try:
            trainer = Trainer(cfg, tmp_path / name, tmp_path / f"{name}_ckpt")
            if name == "replay-shaped":
                trainer.graphs = RecordingGraphs(cfg.micro_batch_size, SEQ)
                trainer.model.register_forward_pre_hook(lambda _m, args: masks.append(args[2]))
            losses[name] = [trainer.train_step(step)["loss"] for step in range(2)]
        finally:
            shutdown_parallel()
    assert trainer.graphs.events == ["step 0", "micro-batch 0", "micro-batch 1", "step 1", "micro-batch 0",
                                     "micro-batch 1"]
    assert len(masks) == 4 and all(m is trainer.graphs.mask for m in masks)
    assert max(abs(a - b) for a, b in zip(losses["eager"], losses["replay-shaped"])) < 1e-6, losses
