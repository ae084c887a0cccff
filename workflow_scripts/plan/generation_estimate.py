"""Projection of the MLPerf Inference llama2-70b accuracy run (24,576 OpenOrca samples, greedy) on one node.

    python -m workflow_scripts.plan.generation_estimate

From the roofline of the generation (continuous_batching.py over decode_engine.py) scaled by the fraction of it
measured on one H200: benchmarks/generate_throughput_7b.py ran the entry point's defaults (Llama-2-7B shape, batch
auto = 180 rows, prompts of 719-898 tokens, 256 new tokens) at MEASURED_ROOFLINE_FRACTION of its roofline
(docs/performance.md).

Roofline of a batch of `rows` on `gpus` GPUs in one tensor-parallel group: the prefill's GEMM FLOPs (2 N per prompt
token) at GEMM_TFLOPS per GPU, then one decode step per new token of the batch, each reading the weights (2 N bytes)
and the live rows' KV cache at the GPU's HBM rate. Continuous batching refills a finished sample's slot at the next
host check, so a slot idles on average half of CHECK_EVERY steps per sample: OCCUPANCY (the queue's tail, under one
round of the 96 each slot serves, is left out). Tensor parallelism adds two all-reduces per layer and step (after
attention and after the MLP); each is taken as ALLREDUCE_S (an assumption for NVLink all-reduces of a few MB inside a
CUDA graph, not measured here).
"""
from __future__ import annotations

from dataclasses import dataclass

from workflow_scripts.inference.batch_size import KV_SHARE, MAX_ROWS
from workflow_scripts.inference.continuous_batching import CHECK_EVERY
from workflow_scripts.scoring.rouge_score_eval import REFERENCE

SAMPLES = 24576  # MLPerf llama2-70b accuracy run (the sampled OpenOrca set)
MEAN_NEW_TOKENS = REFERENCE["tokens_per_sample"]  # the reference's mean generated tokens per sample
MEAN_PROMPT_TOKENS = 808  # mean of the benchmark's prompts (719-898 uniform); OpenOrca itself is not available here
MAX_NEW_TOKENS = 1024  # the reference SUT's max_new_tokens (config inference.max_new_tokens for a real run)
MAX_PROMPT_TOKENS = 1024  # the longest prompts the sampled set keeps (processorca's filter)
# benchmarks/generate_throughput_7b.py on one H200 with the defaults, the code as committed: 0.828, 0.829 and 0.826 of
# the roofline over LoadGen's query in three runs (the engine's warm-up before it, 1-5 s a process, is left out:
# seconds in a run of hours; docs/performance.md)
MEASURED_ROOFLINE_FRACTION = 0.82
OCCUPANCY = MEAN_NEW_TOKENS / (MEAN_NEW_TOKENS + CHECK_EVERY / 2)
ALLREDUCE_S = 25e-6
LLAMA2_70B = dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_layers=80,
                  num_attention_heads=64, num_query_groups=8)


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    hbm_tb_s: float  # achievable read rate (0.9 of the data sheet, as measured on the H200)
    gemm_tflops: float  # dense bf16 GEMM ceiling at the 700 W cap (measured 794 on the H200; same die on the H100)


H100 = Gpu("H100 SXM 80 GB", 80.0, 0.9 * 3.35, 794.0)
H200 = Gpu("H200 141 GB", 141.0, 4.3, 794.0)


def params(shape: dict) -> int:
    from workflow_scripts.plan.planner import llama_params

    return llama_params(shape)


def kv_bytes_per_token(shape: dict) -> int:
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    return shape["num_layers"] * 2 * shape["num_query_groups"] * head_dim * 2  # keys and values, bf16


def auto_rows(shape: dict, gpu: Gpu, gpus: int) -> int:
    """What `--batch-size auto` takes: KV_SHARE of the memory left after the weights, for the longest batch."""
    free = gpu.memory_gb * 1e9 * 0.95 - 2 * params(shape) / gpus  # 5%: CUDA context and allocator slack
    per_row = kv_bytes_per_token(shape) / gpus * (MAX_PROMPT_TOKENS + MAX_NEW_TOKENS)
    return max(1, min(MAX_ROWS, int(KV_SHARE * free // per_row)))


def roofline_hours(shape: dict, gpu: Gpu, gpus: int, samples: int = SAMPLES) -> float:
    """Lower bound of the run's generation time on `gpus` GPUs of one tensor-parallel group."""
    n = params(shape)
    rows = auto_rows(shape, gpu, gpus)
    prefill = samples * MEAN_PROMPT_TOKENS * 2 * n / (gpus * gpu.gemm_tflops * 1e12)
    live = rows * OCCUPANCY
    step_bytes = (2 * n + live * (MEAN_PROMPT_TOKENS + MEAN_NEW_TOKENS / 2) * kv_bytes_per_token(shape)) / gpus
    steps = samples * MEAN_NEW_TOKENS / live
    step_s = step_bytes / (gpu.hbm_tb_s * 1e12) + (2 * shape["num_layers"] * ALLREDUCE_S if gpus > 1 else 0.0)
    return (prefill + steps * step_s) / 3600


def projected_hours(shape: dict, gpu: Gpu, gpus: int, samples: int = SAMPLES) -> float:
    return roofline_hours(shape, gpu, gpus, samples) / MEASURED_ROOFLINE_FRACTION


def projection_lines() -> list[str]:
    lines = [f"Accuracy run projection (MLPerf llama2-70b, {SAMPLES:,} samples, {MEAN_PROMPT_TOKENS} prompt / "
             f"{MEAN_NEW_TOKENS} new tokens per sample on average, TP 8 on one node; roofline with "
             f"{ALLREDUCE_S * 1e6:.0f} us per all-reduce, x 1/{MEASURED_ROOFLINE_FRACTION} as measured on one H200; "
             "`python -m workflow_scripts.plan.generation_estimate`):", "",
             "| GPUs | batch (auto) | roofline h | projected h |", "|---|---:|---:|---:|"]
    for gpu in (H100, H200):
        lines.append(f"| 8 x {gpu.name} | {auto_rows(LLAMA2_70B, gpu, 8)} | {roofline_hours(LLAMA2_70B, gpu, 8):.2f} | "
                     f"{projected_hours(LLAMA2_70B, gpu, 8):.2f} |")
    return lines


def main() -> int:
    print("\n".join(projection_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
