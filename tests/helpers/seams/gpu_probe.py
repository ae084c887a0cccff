"""Record which GPUs and Slurm job a rule's job was given (the test-only rule slurm_gpu_probe, gpu_probe.smk).

CLI: python tests/helpers/seams/gpu_probe.py --out probe.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Mapping

# What a GPU job of the Slurm profile must see: its GPUs, and the Slurm job and partition it runs in.
PROBED = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_PARTITION")


def probe(environ: Mapping[str, str]) -> dict[str, str | None]:
    return {name: environ.get(name) for name in PROBED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    found = probe(os.environ)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(found, indent=1) + "\n")
    os.replace(tmp, out)  # whole or absent, as the rules' outputs are
    print(f"probed {found} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
