"""Batched greedy generation with a KV cache from a megatron-core checkpoint (MLPerf Inference llama2-70b accuracy run).

    python -m workflow_scripts.inference.generate --mcore results/convert/llama_mcore --samples open_orca...sampled_N.pkl
        --tokenizer tokenizer.json --eos-token '</s>' --out mlperf_log_accuracy.json --summary mlperf_log_summary.txt
        --detail mlperf_log_detail.txt --stats generate.json --max-new-tokens 1024 --min-new-tokens 1 --batch-size auto
        --limit N --tp 1 --threads N

Greedy as the reference SUT (num_beams 1, no sampling, min 1 / max 1024 new tokens, stop at EOS). Prompts are the
`tok_input` column, longest first. The default engine is continuous_batching.py over decode_engine.py (a finished
sample's slot takes the next prompt; prompts prefilled in one pass, a fixed-shape KV cache of rotated keys, no host
wait per token; `--batching static` runs one batch at a time instead); `--engine static` runs the reference path,
megatron-core's StaticInferenceContext (static_decode.py). `--batch-size auto` (the default) takes on a GPU the most
rows (slots) whose KV cache fits the memory left after the model (batch_size.py), 8 on CPU. Each sample's output is
its generated ids up to and including EOS.

The run is a LoadGen test, Offline scenario in accuracy mode (loadgen_run.py): LoadGen issues the sample list as one
query, the outputs answer it, and LoadGen writes mlperf_log_accuracy.json (qsl_idx = row of the sample list),
mlperf_log_summary.txt and mlperf_log_detail.txt.

Under torchrun the W processes form W/tp data-parallel groups of `--tp` tensor-parallel ranks (gloo on CPU, NCCL on
cuda:LOCAL_RANK); LoadGen runs on global rank 0 alone, which broadcasts the query's sample rows; the batches are
dealt to the groups (generate_shards.py), the outputs gathered back to rank 0, which answers LoadGen:

    torchrun --standalone --nproc-per-node 8 -m workflow_scripts.inference.generate --tp 8 ...
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from workflow_scripts.inference.accuracy_log import DTYPE, read_sample_column
from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.inference.generate_shards import check_layout
from workflow_scripts.core.progress import Progress
from workflow_scripts.inference.batch_size import parse_batch_size, resolve_batch_size
from workflow_scripts.inference import decode_engine
from workflow_scripts.inference.continuous_batching import generate_batch_fast, generate_stream, warm_up
from workflow_scripts.inference.decode_engine import cache_positions
from workflow_scripts.inference.static_decode import generate_batch, generate_uncached  # noqa: F401 (tests, benchmarks)

log = logging.getLogger("generate")
ENGINES = {"fast": generate_batch_fast, "static": generate_batch}
BATCHING = "continuous"  # the fast engine's batching (--batching); "static": one batch at a time


def read_prompts(samples: Path | str, vocab_size: int | None = None) -> list[list[int]]:
    """tok_input of every row of the sampled evaluation set (.pkl as processorca.py writes it, or .parquet); with
    `vocab_size`, an id outside the model's vocabulary is refused (the embedding lookup would fail naming nothing)."""
    prompts = [[int(t) for t in ids] for ids in read_sample_column(samples, "tok_input")]
    for row, ids in enumerate(prompts):
        if not ids:
            raise PipelineInputError(f"{samples}: row {row}: empty tok_input")
        if vocab_size is not None and (min(ids) < 0 or max(ids) >= vocab_size):
            bad = next(t for t in ids if not 0 <= t < vocab_size)
            raise PipelineInputError(f"{samples}: row {row}: tok_input holds token id {bad}, outside the model's "
                                     f"vocabulary (0..{vocab_size - 1})")
    return prompts


def length_batches(prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices grouped by prompt length (short prefill waste, similar decode lengths), longest first."""
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate_rows(model, vocab_size: int, prompts: list[list[int]], batches: list[list[int]], max_new_tokens: int,
                  eos_id: int, min_new_tokens: int = 1, what: str = "generate",
                  engine: str = "fast") -> dict[int, list[int]]:
    """{row: generated ids} of the rows in `batches` (lists of row indices into prompts). The fast engine decodes
    them with continuous batching, as many slots as the largest batch, refilled in the batches' order; with
    BATCHING static, and the static engine, one batch at a time."""
    outputs: dict[int, list[int]] = {}
    total = sum(len(rows) for rows in batches)
    progress = Progress(log, what, total=total)
    tokens = 0

    def done(row: int, ids: list[int]) -> None:
        nonlocal tokens
        outputs[row] = ids
        tokens += len(ids)
        progress.update(len(outputs), force=len(outputs) == total, samples=len(outputs), tokens=tokens)

    if engine == "fast" and BATCHING == "continuous":
        order = [row for rows in batches for row in rows]
        if order:
            for index, ids in generate_stream(model, vocab_size, [prompts[r] for r in order],
                                              max(map(len, batches)), max_new_tokens, eos_id, min_new_tokens):
                done(order[index], ids)
        return outputs
    for rows in batches:
        for row, ids in zip(rows, ENGINES[engine](model, vocab_size, [prompts[r] for r in rows], max_new_tokens,
                                                  eos_id, min_new_tokens)):
            done(row, ids)
    return outputs


def generate_all(model, vocab_size: int, prompts: list[list[int]], max_new_tokens: int, eos_id: int,
                 min_new_tokens: int = 1, batch_size: int = 8, engine: str = "fast") -> list[list[int]]:
    outputs = generate_rows(model, vocab_size, prompts, length_batches(prompts, batch_size), max_new_tokens, eos_id,
                            min_new_tokens, engine=engine)
    return [outputs[row] for row in range(len(prompts))]


def generate_sharded(model, vocab_size: int, prompts: list[list[int]], max_new_tokens: int, eos_id: int,
                     min_new_tokens: int = 1, batch_size: int = 8, group=None,
                     engine: str = "fast") -> tuple[list[list[int]] | None, dict[str, Any]]:
    """This rank's data-parallel group generates its dealt batches; rank 0 gets every output in row order (others
    None) and a summary of the layout. Every rank of the job calls this (collective); `group` is gather_group()'s,
    made here when not given."""
    from megatron.core import parallel_state as ps

    from workflow_scripts.inference.generate_shards import deal_batches, gather_group, gather_outputs

    if group is None:
        group = gather_group()  # before generating: making a group is collective
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    tp_rank = ps.get_tensor_model_parallel_rank()
    if tp_rank:
        log.setLevel(logging.WARNING)  # the other TP ranks compute the same tokens: one progress line per group
    mine = deal_batches(prompts, length_batches(prompts, batch_size), dp, max_new_tokens)[dp_rank]
    start = time.perf_counter()
    local = generate_rows(model, vocab_size, prompts, mine, max_new_tokens, eos_id, min_new_tokens,
                          what=f"generate dp{dp_rank}/{dp}", engine=engine)
    log.info("data-parallel group %d/%d: %d samples, %d tokens in %.1f s", dp_rank, dp, len(local),
             sum(map(len, local.values())), time.perf_counter() - start)
    outputs = gather_outputs(local, len(prompts), group, contribute=tp_rank == 0)
    layout = {"tensor_parallel": ps.get_tensor_model_parallel_world_size(), "data_parallel": dp,
              "world_size": torch.distributed.get_world_size()}
    return outputs, layout


def load_model(mcore_dir: Path | str, tp: int = 1):
    """The converted checkpoint as an fp32 GPTModel (bf16 on cuda:LOCAL_RANK) with gathered logits, this rank's TP shard
    (torch.distributed is set up here: torchrun's processes, or one process; dist checkpointing reshards)."""
    from workflow_scripts.model.llama_model import init_parallel
    from workflow_scripts.convert.verify_conversion import load_mcore_model

    if not Path(mcore_dir).is_dir():
        raise PipelineInputError(f"{mcore_dir}: megatron-core checkpoint folder missing")
    init_parallel(tp, 1)
    if torch.cuda.is_available():
        # Built in bf16 on this rank's GPU: an fp32 70B shard at TP 8 (35 GB) plus its load would crowd an 80 GB H100.
        # megatron's fused SwiGLU off: it is torch.compile'd, which compiles again for every new batch shape (seconds
        # each); the fast engine runs its own Triton SwiGLU instead (decode_engine._mlp), the static engine eager.
        model, cfg = load_mcore_model(mcore_dir, params_dtype=torch.bfloat16, bias_activation_fusion=False)
        return model.to(device="cuda", dtype=torch.bfloat16), cfg
    return load_mcore_model(mcore_dir)


def eos_token_id(tokenizer: Path | str, eos_token: str) -> int:
    from tokenizers import Tokenizer

    eos = Tokenizer.from_file(str(tokenizer)).token_to_id(eos_token)
    if eos is None:
        raise PipelineInputError(f"{tokenizer}: no token {eos_token!r} (config inference.eos_token)")
    return eos


def _model_config(mcore_dir: Path):
    from workflow_scripts.convert.conversion import read_model_config

    if not mcore_dir.is_dir():
        raise PipelineInputError(f"{mcore_dir}: megatron-core checkpoint folder missing")
    return read_model_config(mcore_dir)[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.inference.generate", description=__doc__.split("\n")[0])
    p.add_argument("--mcore", required=True, type=Path, help="converted megatron-core checkpoint folder")
    p.add_argument("--samples", required=True, type=Path, help="sampled OpenOrca .pkl/.parquet (column tok_input)")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.json (for the EOS id)")
    p.add_argument("--eos-token", required=True)
    p.add_argument("--out", required=True, type=Path, help="mlperf_log_accuracy.json")
    p.add_argument("--summary", required=True, type=Path, help="LoadGen's mlperf_log_summary.txt")
    p.add_argument("--detail", required=True, type=Path, help="LoadGen's mlperf_log_detail.txt")
    p.add_argument("--stats", required=True, type=Path, help="JSON with counts, timing and LoadGen's result fields")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--min-new-tokens", type=int, required=True)
    p.add_argument("--batch-size", type=parse_batch_size, required=True,
                   help="prompts per batch, or 'auto' (the most rows whose KV cache fits the GPU; 8 on CPU)")
    p.add_argument("--limit", type=int, required=True, help="only the first N samples (0 = all)")
    p.add_argument("--tp", type=int, required=True, help="tensor parallel size (torchrun world size / tp = data parallel)")
    p.add_argument("--threads", type=int, required=True, help="torch CPU threads (0 = torch default)")
    p.add_argument("--engine", choices=sorted(ENGINES), default="fast",
                   help="decode_engine.py (default) or megatron's StaticInferenceContext, the reference path")
    p.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                   help="fast engine: refill a finished sample's slot with the next prompt (default), or run "
                        "one batch at a time until its longest output ends (the lever's baseline)")
    p.add_argument("--cuda-graphs", choices=("on", "off"), default="on",
                   help="fast engine on a GPU: replay each batch's decode steps as CUDA graphs (off: eager launches)")
    p.add_argument("--decode-attention", choices=("matmul", "triton", "sdpa", "auto"), default="auto",
                   help="fast engine's decode attention: two batched matmuls, the split-KV Triton kernel, torch's "
                        "fused SDPA kernels, or auto (the default: triton on a GPU with Triton, else matmul)")
    p.add_argument("--kv-cache", choices=("model", "fp8"), default="model",
                   help="fast engine's KV cache: the model's dtype (default), or fp8 e4m3 codes with a scale per "
                        "cached vector (kv_fp8.py: half the decode's reads and memory; its accuracy is the score's)")
    p.add_argument("--rope", choices=("torch", "triton", "auto"), default="auto",
                   help="fast engine's RoPE: torch elementwise ops, the in-place Triton kernel, or auto (the "
                        "default: triton on a GPU with Triton, else torch)")
    p.add_argument("--swiglu", choices=("module", "triton", "auto"), default="auto",
                   help="fast engine's MLP activation: the MLP module's own forward, one Triton kernel, or auto (the "
                        "default: triton on a GPU with Triton for megatron's gated SiLU MLP, else module)")
    return p


def generate_files(args: argparse.Namespace) -> None:
    """The whole run for parsed arguments; on global rank 0 LoadGen writes --out, --summary and --detail, and this
    --stats. torch.distributed stays up afterwards (the caller shuts it down), so one torchrun job may call this more
    than once."""
    if args.threads:
        torch.set_num_threads(args.threads)
    global BATCHING
    BATCHING = args.batching
    decode_engine.CUDA_GRAPHS = args.cuda_graphs == "on"
    decode_engine.DECODE_ATTENTION = args.decode_attention
    decode_engine.ROPE = args.rope
    decode_engine.KV_CACHE = args.kv_cache
    decode_engine.SWIGLU = args.swiglu
    if args.kv_cache != "model" and args.engine != "fast":
        raise PipelineInputError(f"--kv-cache {args.kv_cache} needs --engine fast (the {args.engine} engine keeps "
                                 "megatron's own cache)")
    if args.max_new_tokens < 1 or args.min_new_tokens > args.max_new_tokens:
        raise PipelineInputError(f"need 1 <= min_new_tokens ({args.min_new_tokens}) <= max_new_tokens ({args.max_new_tokens})")
    model_cfg = _model_config(args.mcore)
    prompts = read_prompts(args.samples, model_cfg.vocab_size)
    if args.limit:
        prompts = prompts[: args.limit]
    eos = eos_token_id(args.tokenizer, args.eos_token)
    check_layout(int(os.environ.get("WORLD_SIZE", 1)), args.tp, model_cfg)  # before any loading
    model, cfg = load_model(args.mcore, args.tp)
    longest = max(len(p) for p in prompts) + args.max_new_tokens
    if longest > cfg.max_position_embeddings:
        log.warning("prompt + max_new_tokens = %d exceeds the model's %d positions", longest, cfg.max_position_embeddings)
    positions = cache_positions(max(len(p) for p in prompts), args.max_new_tokens)
    args.swiglu_used = (decode_engine.swiglu_kind(next(model.parameters()).device, model.decoder.layers[0].mlp)
                        if args.engine == "fast" else "module")  # the static engine runs megatron's own forward
    args.rows = resolve_batch_size(args.batch_size, model, positions, args.kv_cache == "fp8")  # collective under TP
    log.info("engine %s, KV cache %s, batch size %d (requested %s)", args.engine, args.kv_cache, args.rows,
             args.batch_size)
    stats = loadgen_generate(args, model, cfg.vocab_size, prompts, eos)
    if stats is None:
        return  # not global rank 0: its outputs went to rank 0, which answered LoadGen
    write_json(args.stats, stats)
    log.info("generated %d tokens for %d samples in %.1f s", stats["generated_tokens"], len(prompts),
             stats["seconds"])


def loadgen_generate(args: argparse.Namespace, model, vocab_size: int, prompts: list[list[int]],
                     eos: int) -> dict[str, Any] | None:
    """The sharded generation inside LoadGen's Offline accuracy test (every rank calls this; collective): rank 0 runs
    LoadGen and broadcasts its query's sample rows, every rank generates its share, rank 0 answers LoadGen, places
    its logs and returns the stats (None elsewhere)."""
    from workflow_scripts.inference.generate_shards import gather_group, share_rows
    from workflow_scripts.inference.loadgen_run import AccuracyRun, LogPaths

    group = gather_group()  # one group for the broadcast and the gather (collective)
    warm = time.perf_counter()
    if args.engine == "fast" and torch.cuda.is_available():  # every rank: TP ranks run the same shapes together
        warm_up(model, vocab_size, eos)
        torch.cuda.synchronize()
    warm = time.perf_counter() - warm
    log.info("warm-up before LoadGen's query: %.1f s", warm)
    run = None
    if torch.distributed.get_rank() == 0:
        run = AccuracyRun(len(prompts), LogPaths(args.out, args.summary, args.detail))
    try:
        started = time.perf_counter()
        if run is not None:
            run.start()
        rows = share_rows(run.query_rows() if run is not None else None, group)
        start = time.perf_counter()
        outputs, layout = generate_sharded(model, vocab_size, [prompts[r] for r in rows], args.max_new_tokens, eos,
                                           args.min_new_tokens, args.rows, group, args.engine)
        seconds = time.perf_counter() - start
        if run is None:
            return None
        run.complete(dict(zip(rows, outputs)))
        result = run.finish()
    finally:
        if run is not None:
            run.close()
    result["seconds"] = round(time.perf_counter() - started, 3)
    return {**_stats(args, layout, outputs, seconds, eos, result), "warmup_seconds": round(warm, 3)}


def _stats(args: argparse.Namespace, layout: dict[str, Any], outputs: list[list[int]], seconds: float, eos: int,
           loadgen: dict[str, Any]) -> dict[str, Any]:
    generated = sum(len(o) for o in outputs)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where load_model put the model
    return {
        **layout,
        "samples": len(outputs), "generated_tokens": generated, "seconds": round(seconds, 3),
        "tokens_per_second": round(generated / seconds, 2) if seconds else None,
        "stopped_at_eos": sum(1 for o in outputs if o and o[-1] == eos), "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens, "batch_size": args.rows,
        "batch_size_requested": args.batch_size, "engine": args.engine, "batching": args.batching,
        "cuda_graphs": args.cuda_graphs, "decode_attention": args.decode_attention,
        "decode_attention_used": decode_engine.decode_attention_kind(device), "rope": args.rope,
        "rope_used": decode_engine.rope_kind(device), "swiglu": args.swiglu, "swiglu_used": args.swiglu_used,
        "kv_cache": args.kv_cache, "eos_id": eos, "dtype": DTYPE,
        "checkpoint": str(args.mcore), "sample_list": str(args.samples), "loadgen": loadgen,
    }


def _body(argv: Sequence[str] | None) -> int:
    from workflow_scripts.model.llama_model import shutdown_parallel

    args = parser().parse_args(argv)
    try:
        generate_files(args)
    finally:
        shutdown_parallel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
