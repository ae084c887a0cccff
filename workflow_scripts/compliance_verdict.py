"""Verdict JSON of the official compliance checker for one training run, written whether the log passes or not.

    python -m workflow_scripts.compliance_verdict --log results/train/lora/seed1234/mlperf_log.txt
        --benchmark llama2_70b_lora [--ruleset 6.1.0] --out verdict.json

A non-compliant run is a result to report (the score table marks it), not a broken DAG; input that cannot be checked
is refused instead, naming the log: missing or empty, declaring another benchmark, or truncated (no run_stop line, as
a run killed mid-way leaves it).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .atomic import write_json
from .cli import run_main
from .compliance import DEFAULT_RULESET, check_log
from .errors import PipelineInputError


def require_run_stop(log: Path) -> None:
    """A log whose run never ended (no run_stop) is partial: refuse it rather than let the checker call it a fail."""
    if not log.is_file():
        raise PipelineInputError(f"{log}: MLPerf log missing or empty")
    for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
        if ":::MLLOG" not in line:
            continue
        try:
            record = json.loads(line.split(":::MLLOG", 1)[1])
        except json.JSONDecodeError:
            raise PipelineInputError(f"{log}: line {number}: malformed :::MLLOG record (truncated log?)") from None
        if record.get("key") == "run_stop":
            return
    raise PipelineInputError(f"{log}: truncated MLPerf log: no run_stop record")


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--ruleset", default=DEFAULT_RULESET)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    verdict = check_log(args.log, args.benchmark, args.ruleset)  # missing/empty log, other benchmark: refused here
    require_run_stop(args.log)
    print(verdict.checker_output, file=sys.stderr)
    print(f"{args.log}: {'PASS' if verdict.passed else 'FAIL'} ({args.benchmark}, ruleset {args.ruleset})", file=sys.stderr)
    write_json(args.out, asdict(verdict))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
