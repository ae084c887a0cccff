"""Record which GPUs and Slurm job a rule's job was given (test-only rule slurm_gpu_probe, config testing.gpu_probe).

CLI: python -m workflow_scripts.ops.gpu_probe --out probe.json
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main

log = logging.getLogger("gpu_probe")
# What a GPU job of the Slurm profile must see: its GPUs, and the Slurm job and partition it runs in.
PROBED = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_PARTITION")


def probe(environ: Mapping[str, str]) -> dict[str, str | None]:
    return {name: environ.get(name) for name in PROBED}


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    found = probe(os.environ)
    write_json(args.out, found)
    log.info("probed %s -> %s", found, args.out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
