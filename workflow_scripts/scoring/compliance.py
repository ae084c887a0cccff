"""Runs the official MLPerf compliance checker (package mlperf-logging, unmodified) on a result log.

CLI: python -m workflow_scripts.scoring.compliance --log FILE --benchmark llama2_70b_lora --ruleset 6.1.0 --out verdict.json
                                          [--record]
Without --record it exits 2 unless the checker passes. With --record (the DAG's compliance rule) the verdict JSON is
written whether the log passes or not: a non-compliant run is a result to report (the score table marks it), not a
broken DAG. Input that cannot be checked is refused either way, naming the log: missing or empty, declaring another
benchmark, or truncated (no run_stop record, as a run killed mid-way leaves it).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError

DEFAULT_RULESET = "6.1.0"


@dataclass
class Verdict:
    log: str
    benchmark: str
    ruleset: str
    passed: bool
    checker_output: str


def logged_benchmark(log: Path) -> str | None:
    """The `submission_benchmark` value a log declares (None if it declares none)."""
    import json

    for line in log.read_text(errors="replace").splitlines():
        if ":::MLLOG" in line and '"submission_benchmark"' in line:
            return json.loads(line.split(":::MLLOG", 1)[1])["value"]
    return None


def require_run_stop(log: Path) -> None:
    """A log whose run never ended (no run_stop) is partial: refuse it rather than let the checker call it a fail."""
    import json

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


def require_complete_log(log: Path, benchmark: str) -> None:
    """Refuse, naming the file, a log that is missing or empty, declares another benchmark, or never ended: the
    checks before a log may be checked or packaged as a result of `benchmark`."""
    if not log.is_file() or log.stat().st_size == 0:
        raise PipelineInputError(f"{log}: MLPerf log missing or empty")
    declared = logged_benchmark(log)
    if declared != benchmark:
        raise PipelineInputError(f"{log}: log is for benchmark {declared!r}, expected {benchmark!r}")
    require_run_stop(log)


def check_log(log: str | Path, benchmark: str, ruleset: str = DEFAULT_RULESET) -> Verdict:
    log = Path(log)
    require_complete_log(log, benchmark)
    with tempfile.TemporaryDirectory() as tmp:  # the checker also writes its own log file; keep it out of the way
        proc = subprocess.run(
            [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", ruleset,
             "--log_output", f"{tmp}/checker.log", str(log.resolve())],
            capture_output=True, text=True, cwd=tmp,
        )
    output = (proc.stdout + proc.stderr).strip()
    passed = proc.returncode == 0 and "SUCCESS" in output and "FAILED" not in output
    return Verdict(str(log), benchmark, ruleset, passed, output)


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--ruleset", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--record", action="store_true", help="write the verdict even when the log fails the rules")
    args = parser.parse_args(argv)
    verdict = check_log(args.log, args.benchmark, args.ruleset)
    print(verdict.checker_output, file=sys.stderr)
    print(f"{args.log}: {'PASS' if verdict.passed else 'FAIL'} ({args.benchmark}, ruleset {args.ruleset})", file=sys.stderr)
    if not verdict.passed and not args.record:
        raise PipelineInputError(f"{args.log}: fails the {args.benchmark} compliance rules {args.ruleset}")
    write_json(args.out, asdict(verdict))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
