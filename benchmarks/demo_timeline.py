"""Wall time of the whole demo and of each rule, from a fresh copy of the workflow (what `make demo` does).

    .venv/bin/python benchmarks/demo_timeline.py               # run the demo in a temporary copy, print the table
    .venv/bin/python benchmarks/demo_timeline.py --log FILE     # only read a Snakemake log of an earlier run

Per-rule times are read from the Snakemake log: from the timestamp before a job's "rule" block to the one before its
"Finished jobid" line (Snakemake stamps events to the second, so short jobs show 0-1 s). `start` is the first job's
offset from the start of the run: it shows where the critical path (data -> base model -> conversion -> LoRA) waits.
"""
from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def rule_times(log_text: str) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """{rule: [(start offset s, duration s), ...]} and the run's wall time."""
    now = first = None
    pending: str | None = None
    started: dict[str, tuple[str, datetime.datetime]] = {}
    jobs: dict[str, list[tuple[float, float]]] = {}
    for line in log_text.splitlines():
        if match := STAMP.match(line):
            now = datetime.datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or now
        elif match := re.match(r"(?:local)?rule (\w+):", line):
            pending = match.group(1)
        elif (match := re.match(r"\s+jobid: (\d+)", line)) and pending:
            started[match.group(1)] = (pending, now)
            pending = None
        elif (match := re.match(r"Finished jobid: (\d+)", line)) and match.group(1) in started:
            rule, began = started.pop(match.group(1))
            jobs.setdefault(rule, []).append(((began - first).total_seconds(), (now - began).total_seconds()))
    return jobs, (now - first).total_seconds() if first else 0.0


def run_demo(cores: int) -> tuple[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "wf"
        shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", ".venv", "results", "logs", "checkpoints",
                                                                   ".snakemake", "__pycache__"))
        start = time.monotonic()
        subprocess.run([str(Path(sys.executable).with_name("snakemake")), "--cores", str(cores)], cwd=work, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.monotonic() - start
        log = max((work / ".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
        return log.read_text(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, help="a Snakemake log to read instead of running the demo")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.log:
        text, seconds = args.log.read_text(), None
    else:
        text, seconds = run_demo(args.cores)
    jobs, wall = rule_times(text)
    print(f"| rule | jobs | start s | total s | longest s |\n|---|---:|---:|---:|---:|")
    for rule, runs in sorted(jobs.items(), key=lambda item: -sum(d for _, d in item[1])):
        print(f"| {rule} | {len(runs)} | {runs[0][0]:.0f} | {sum(d for _, d in runs):.0f} | {max(d for _, d in runs):.0f} |")
    print(f"\nwhole demo: {seconds if seconds is not None else wall:.0f} s wall (log span {wall:.0f} s)")
    source = f" --log {args.log}" if args.log else ""
    print(f"command: .venv/bin/python benchmarks/demo_timeline.py{source} --cores {args.cores}")


if __name__ == "__main__":
    main()
