"""How long planning takes (`snakemake -n`), for the full-scale C4 layout (1,024 + 8 placeholder shards that are not
data: planning must only list them) beside the demo DAG, in one run on this machine. The tests assert that planning
reads no data; its duration is measured here, not asserted.

    .venv/bin/python benchmarks/plan_dry_run.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def placeholders(folder: Path) -> Path:
    raw = folder / "c4"
    raw.mkdir()
    for i in range(1024):
        (raw / f"c4-train.{i:05d}-of-01024.json.gz").write_bytes(b"placeholder\n")
    for i in range(8):
        (raw / f"c4-validation.{i:05d}-of-00008.json.gz").write_bytes(b"placeholder\n")
    (folder / "tokenizer.json").write_bytes(b"placeholder\n")
    paths = folder / "paths.yaml"
    paths.write_text(yaml.safe_dump({"c4": {"raw_dir": str(raw), "tokenizer": str(folder / "tokenizer.json")}}))
    return paths


def timed(args: list[str], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.monotonic()
        subprocess.run([SNAKEMAKE, *args], cwd=ROOT, check=True, capture_output=True)
        seconds.append(time.monotonic() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = placeholders(Path(tmp))
        full = timed(["-n", "c4_data", "--configfile", "configs/llama31_405b_c4.yaml", str(paths)], args.repeats)
    demo = timed(["-n"], args.repeats)
    print(f"command: .venv/bin/python benchmarks/plan_dry_run.py --repeats {args.repeats}\n")
    print("| plan | jobs | median seconds |\n|---|---:|---:|")
    print(f"| full-scale C4 (1,024 + 8 shards, placeholders) | 19 | {full:.1f} |")
    print(f"| the demo DAG | all | {demo:.1f} |")


if __name__ == "__main__":
    main()
