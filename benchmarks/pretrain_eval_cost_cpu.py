"""What one llama31_8b evaluation at the rules' size (1,024 sequences of 8,192 tokens) costs on this CPU, for the demo's
pretraining model and for the smallest Llama worth the name (one layer, hidden 32), through the trainer's own model
and loss (`build_model`, `stage_output`). It is why the demo evaluates 64 sequences of 256 tokens: `make demo` has
5 minutes in all (issue 11). Also a training micro-batch (one 8,192-token row, forward and backward).

    .venv/bin/python benchmarks/pretrain_eval_cost_cpu.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
from workflow_scripts.train.train_config import build_config
from workflow_scripts.train.train_loss import stage_output
from workflow_scripts.train.train_model import build_model

SEQ, EVAL_SEQUENCES = 8192, 1024
SHAPES = {  # model_shape changes on top of demo_pretrain_cpu's
    "demo_pretrain_cpu (hidden 128, 2 layers, GQA 4/2)": {},
    "smallest: hidden 32, 1 layer, 2 heads / 1 group": dict(hidden_size=32, intermediate_size=96, num_layers=1,
                                                            num_attention_heads=2, num_query_groups=1, head_dim=16),
}


def cost(over: dict, repeats: int) -> tuple[float, float]:
    """Seconds per 8,192-token row: evaluation forward, training forward + backward."""
    base = build_config("demo_pretrain_cpu", {})
    cfg = build_config("demo_pretrain_cpu", {"seq_length": SEQ, "model_shape": {
        **base.model_shape, **over, "max_position_embeddings": SEQ}})
    model, _ = build_model(cfg)
    tokens = torch.randint(0, cfg.model_shape["vocab_size"], (1, SEQ))
    model.eval()
    with torch.no_grad():
        stage_output(model, tokens, tokens)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            stage_output(model, tokens, tokens)
        forward = (time.perf_counter() - start) / repeats
    model.train()
    start = time.perf_counter()
    stage_output(model, tokens, tokens).mean().backward()
    return forward, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    init_parallel(1, 1, seed=1234)
    try:
        rows = [(name, *cost(over, args.repeats)) for name, over in SHAPES.items()]
    finally:
        shutdown_parallel()
    print(f"\ncommand: .venv/bin/python benchmarks/pretrain_eval_cost_cpu.py --repeats {args.repeats}; "
          f"torch threads {torch.get_num_threads()}\n")
    print("| model | eval s per row | one evaluation (1,024 rows) | train s per row (fwd + bwd) |")
    print("|---|---:|---:|---:|")
    for name, forward, train in rows:
        print(f"| {name} | {forward:.3f} | {forward * EVAL_SEQUENCES:.0f} s | {train:.2f} |")


if __name__ == "__main__":
    main()
