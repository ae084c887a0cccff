"""The trainer of all three training workloads (LoRA fine-tuning, pretraining, SFT throughput) on megatron-core.

CLI (single process, or under torchrun for TP/DP; gloo on CPU, NCCL on GPU):
  python -m workflow_scripts.train --recipe demo_lora_cpu [--overrides F.yaml] --out DIR --ckpt-dir DIR
Writes into DIR: metrics.json (last), mlperf_log.txt, steps.csv, eval.csv, resolved_config.json and the adapter
(LoRA: adapter/) or the final model (pretrain: checkpoint/, a torch_dist folder + model_config.json).
Resumes from the newest complete checkpoint in --ckpt-dir. SIGTERM/SIGUSR1: save a checkpoint, exit with 75.
This module is the command line; the run itself is train_run.Trainer (re-exported here with build_config).
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.train import train_checkpoint
from workflow_scripts.train.train_config import TrainConfig, build_config
from workflow_scripts.train.train_run import EXIT_DIVERGED, EXIT_PREEMPTED, Trainer

__all__ = ["EXIT_DIVERGED", "EXIT_PREEMPTED", "Trainer", "build_config", "load_config", "main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--overrides", type=Path, help="YAML file of TrainConfig fields overriding the recipe")
    parser.add_argument("--overrides-inline", default="", help="the same as a YAML mapping string (rules use this)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="single overrides (CLI wins)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ckpt-dir", type=Path, required=True)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {}
    if args.overrides:
        overrides.update(yaml.safe_load(args.overrides.read_text()) or {})
    if getattr(args, "overrides_inline", ""):
        overrides.update(yaml.safe_load(args.overrides_inline) or {})
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return build_config(args.recipe, overrides)


def _body(argv: Sequence[str] | None) -> int:
    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel

    args = _parse(argv)
    cfg = load_config(args)  # every config error surfaces here, before any compute
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world % (cfg.tensor_parallel * cfg.pipeline_parallel):
        raise PipelineInputError(f"train config: tensor_parallel x pipeline_parallel = {cfg.tensor_parallel} x "
                                 f"{cfg.pipeline_parallel} does not divide the {world} launched processes")
    if cfg.optimizer_impl == "megatron" and not torch.cuda.is_available():
        raise PipelineInputError("train config: optimizer_impl megatron needs CUDA (megatron-core's DDP and optimizer "
                                 "allocate on the GPU); use auto or torch on CPU")
    if cfg.checkpoint and not Path(cfg.checkpoint, "model_config.json").is_file():
        raise PipelineInputError(f"train config: checkpoint {cfg.checkpoint} is missing or not a converted checkpoint")
    from workflow_scripts.train.train_fingerprint import check_resume, fingerprint

    run_fingerprint = fingerprint(cfg.resolved(), world)
    resume = train_checkpoint.newest_complete(args.ckpt_dir)
    if resume is not None:  # before any compute: a checkpoint of another run is never resumed
        check_resume(resume, run_fingerprint)
    if cfg.cuda_graphs:
        from workflow_scripts.train.train_cuda_graphs import check_cuda_graphs, use_side_stream

        check_cuda_graphs(cfg)
    torch.manual_seed(cfg.seed)
    init_parallel(cfg.tensor_parallel, cfg.pipeline_parallel, seed=cfg.seed, te_rng_tracker=cfg.cuda_graphs)
    if cfg.cuda_graphs:
        use_side_stream()  # on this rank's device (init_parallel set it), before the model exists
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, args.out, args.ckpt_dir, run_fingerprint)

        def on_signal(signum, _frame):
            trainer.stop_signal = signum

        if trainer.full_model or not trainer.megatron_optimizer:  # megatron dist checkpoints (model/, state/): their
            train_checkpoint.spawn_writer_helper_ignoring((signal.SIGTERM, signal.SIGUSR1))  # writer's helper
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGUSR1, on_signal)
        return trainer.run()
    finally:
        shutdown_parallel()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
