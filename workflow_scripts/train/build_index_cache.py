"""Pre-build megatron-core's GPTDataset index cache on a CPU node, before the GPU training job (Megatron-LM #795:
otherwise rank 0 builds it at training start while every GPU waits). Builds exactly what the trainer will ask for:
the same TrainConfig gives the same dataset description, hence the same cache files.

CLI: python -m workflow_scripts.train.build_index_cache --recipe R [--overrides F.yaml] [--set K=V ...] --done FILE
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Sequence

from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError


def _body(argv: Sequence[str] | None) -> int:
    import torch

    from workflow_scripts.model.llama_model import LlamaConfig, init_parallel, shutdown_parallel
    from workflow_scripts.train.trainer import load_config
    from workflow_scripts.train.train_data import GPTBatches

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--overrides", type=Path)
    parser.add_argument("--overrides-inline", default="")
    parser.add_argument("--set", nargs="*", default=[])
    parser.add_argument("--done", type=Path, required=True, help="JSON written when the cache is complete")
    args = parser.parse_args(argv)
    cfg = load_config(args)
    if cfg.workload != "pretrain" or not cfg.index_cache:
        raise PipelineInputError(f"recipe {cfg.recipe}: an index cache needs a pretraining config with index_cache")
    vocab = LlamaConfig.from_json(dict(cfg.model_shape)).vocab_size if cfg.model_shape else 0
    # megatron names its cache files by a hash of the dataset's description (paths, lengths, seed), not of the data:
    # new tokens under the same paths would reuse the old indices (wrong sample boundaries, or an IndexError). This
    # rule runs when its data or config changed, so it starts from an empty folder.
    shutil.rmtree(cfg.index_cache, ignore_errors=True)
    init_parallel(1, 1, seed=cfg.seed)  # GPTDataset needs torch.distributed, like the trainer
    try:
        data = GPTBatches.for_config(cfg, vocab)
        files = sorted(str(p.name) for p in Path(cfg.index_cache).glob("*"))
        write_json(args.done, {"cache": cfg.index_cache, "train_samples": len(data.train),
                               "validation_samples": len(data.valid), "files": files})
        print(json.dumps({"files": len(files)}))
    finally:
        shutdown_parallel()
        del torch
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
