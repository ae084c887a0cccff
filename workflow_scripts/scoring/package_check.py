"""Runs mlperf-logging's package checker and result summarizer (unmodified) on a submission package.

    python -m workflow_scripts.scoring.package_check check --package DIR --ruleset 6.1.0 [--rcp-bypass] --out check.json
    python -m workflow_scripts.scoring.package_check summarize --package DIR --manifest package.json
        --check check.json --ruleset 6.1.0 --out summary.json --out-csv summary.csv

The package checker exits 0 whether the package passes or not: its verdict is the last lines of its log ("PACKAGE
CHECKER FOUND NO ERRORS, SUCCESS !" or "... FOUND ERRORS ..."), so that is what is parsed; its ERROR lines give the
one-line reason. A failing package is a recorded verdict, like a failed ROUGE target, not a failed job; a package
folder that is missing or lacks results/ and systems/ is refused (exit 2).

Both tools write into the folder they check (the RCP check leaves results/<system>/<benchmark>/scaling.json when
the runs converge faster than the reference's mean, to normalize the score), so each runs on a temporary copy: the
DAG's package stays as gathered. The checker's scaling factors are recorded in check.json and put back into the
summarizer's copy, as if the summarizer ran on the checked folder (the official order).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from workflow_scripts.core.atomic import atomic_open, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.json_input import read_json_object

PASS_LINE = "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS"
FAIL_LINE = "PACKAGE CHECKER FOUND ERRORS"
SUMMARY_FIELDS = ("benchmark", "workload", "runs", "time_to_train_min", "rcp", "rcp_scaling_factor",
                  "samples_to_converge", "global_batch_size")


def require_package(package: Path) -> None:
    if not (package / "results").is_dir() or not (package / "systems").is_dir():
        raise PipelineInputError(f"{package}: not a submission package (no results/ and systems/ folders)")


def copy_package(package: Path, tmp: Path) -> Path:
    copy = tmp / package.name
    shutil.copytree(package, copy)
    return copy


def message_lines(output: str, level: str) -> list[str]:
    """The first line of each `LEVEL - message` record, deduplicated in order."""
    found: list[str] = []
    for line in output.splitlines():
        if line.startswith(f"{level} - "):
            text = " ".join(line[len(level) + 3:].split())
            if text not in found:
                found.append(text)
    return found


def rcp_results(output: str) -> dict[str, dict[str, Any]]:
    """Benchmark -> the RCP test's outcome and message, from the ` Benchmark X` header before each."""
    results: dict[str, dict[str, Any]] = {}
    benchmark = ""
    for line in output.splitlines():
        if line.startswith("INFO -  Benchmark "):
            benchmark = line.split("Benchmark ", 1)[1].strip()
        for outcome in ("Passed", "Failed"):
            marker = f"RCP Test {outcome}: "
            if marker in line:
                results[benchmark] = {"passed": outcome == "Passed", "message": line.split(marker, 1)[1].strip()}
    return results


def noncompliant_results(output: str) -> list[str]:
    """Result files (relative to the package's results/) whose compliance run reported a failed check."""
    bad: list[str] = []
    current = ""
    for line in output.splitlines():
        if "Running compliance on file:" in line:
            current = line.split("Running compliance on file:", 1)[1].strip()
            current = current.split("/results/", 1)[-1]
        elif current and "CHECK for" in line and "failed" in line and current not in bad:
            bad.append(current)
    return bad


def verdict(output: str) -> tuple[bool, str]:
    """(passed, why not in one line) from the checker's output; no verdict line at all (a crash) is a failure."""
    tail = output.strip().splitlines()[-6:]
    if any(PASS_LINE in line for line in tail):
        return True, ""
    errors = message_lines(output, "ERROR")
    if any(FAIL_LINE in line for line in tail):
        return False, "; ".join(errors) or "the package checker found errors"
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return False, f"the package checker stopped without a verdict: {last}"


def scaling_factors(copy: Path) -> dict[str, float]:
    """Benchmark -> the factor the RCP check wrote in results/<system>/<benchmark>/scaling.json."""
    return {path.parent.name: float(json.loads(path.read_text())["scaling_factor"])
            for path in sorted(copy.glob("results/*/*/scaling.json"))}


def check(package: Path, ruleset: str, rcp_bypass: bool) -> dict[str, Any]:
    require_package(package)
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_package(package, Path(tmp))
        command = [sys.executable, "-m", "mlperf_logging.package_checker", str(copy), "training", ruleset,
                   "--log_output", f"{tmp}/package_checker.log", *(["--rcp-bypass"] if rcp_bypass else [])]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
        output = (proc.stdout + proc.stderr).replace(str(copy), str(package)).replace(tmp, "<tmp>")
        scaling = scaling_factors(copy)
    official, reason = verdict(output)
    bad = noncompliant_results(output)
    passed = official and not bad
    if official and bad:
        reason = (f"{', '.join(bad)}: not compliant with the {ruleset} rules (the official checker accepts one such "
                  f"file under olympic scoring, with a warning; a non-compliant result is a broken or edited run)")
    return {"passed": passed, "official_passed": official, "noncompliant_results": bad, "reason": reason,
            "ruleset": ruleset, "rcp_bypass": rcp_bypass,
            "package": str(package), "errors": message_lines(output, "ERROR"),
            "warnings": message_lines(output, "WARNING"), "rcp": rcp_results(output), "rcp_scaling": scaling,
            "checker_output": output}


def summarizer_rows(copy: Path, ruleset: str, tmp: Path) -> tuple[list[dict[str, Any]], str]:
    """The summarizer's detailed rows (one per system) and its output."""
    command = [sys.executable, "-m", "mlperf_logging.result_summarizer", str(copy), "training", ruleset,
               "--csv", str(tmp / "summary.csv")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
    output = (proc.stdout + proc.stderr).replace(str(tmp), "<tmp>")
    detailed = tmp / "summary_detailed.json"
    if proc.returncode != 0 or not detailed.is_file():
        return [], output
    return json.loads(detailed.read_text()), output


def benchmark_scores(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per benchmark of the package: the summarizer's olympic-mean time to train (minutes, times the
    RCP scaling factor) and its RCP columns; None where it gives none (fewer than 3 results, or too few converged)."""
    row = next((r for r in rows if r.get("submitter") == manifest["submitter"]), {})
    out = []
    for benchmark, entry in sorted(manifest["benchmarks"].items()):
        def col(name: str) -> Any:
            return row.get(f"{benchmark}:{name}")
        out.append({"benchmark": benchmark, "workload": entry["workload"], "runs": entry["runs"],
                    "time_to_train_min": col("time_to_train"), "rcp": col("RCP") or "",
                    "rcp_scaling_factor": col("rcp_scaling_factor"), "samples_to_converge": col("samples_to_converge"),
                    "global_batch_size": col("GBS")})
    return out


def summarize(package: Path, manifest_path: Path, check_path: Path, ruleset: str) -> dict[str, Any]:
    require_package(package)
    manifest = read_json_object(manifest_path, "submission manifest")
    checked = read_json_object(check_path, "package check verdict")
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_package(package, Path(tmp))
        for benchmark, factor in checked.get("rcp_scaling", {}).items():
            (copy / "results" / manifest["system"] / benchmark / "scaling.json").write_text(
                json.dumps({"scaling_factor": factor}))
        rows, output = summarizer_rows(copy, ruleset, Path(tmp))
    return {"ruleset": ruleset, "package_passed": checked.get("passed"), "benchmarks": benchmark_scores(rows, manifest),
            "summarizer_rows": rows, "summarizer_output": output.replace(str(copy), str(package)),
            "error": "" if rows else f"the result summarizer gave no summary: {output.strip()[-300:]}"}


def summary_csv(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r[k] is None else r[k]) for k in SUMMARY_FIELDS} for r in summary["benchmarks"])
    return out.getvalue()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.scoring.package_check", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check")
    c.add_argument("--rcp-bypass", action="store_true", help="the package checker's --rcp-bypass")
    s = sub.add_parser("summarize")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--check", type=Path, required=True)
    s.add_argument("--out-csv", type=Path, required=True)
    for parser in (c, s):
        parser.add_argument("--package", type=Path, required=True)
        parser.add_argument("--ruleset", required=True)
        parser.add_argument("--out", type=Path, required=True)
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        result = check(args.package, args.ruleset, args.rcp_bypass)
        print(result["checker_output"], file=sys.stderr)
        print(f"{args.package}: {'PASS' if result['passed'] else 'FAIL'} {result['reason']}", file=sys.stderr)
        write_json(args.out, result)
        return 0
    summary = summarize(args.package, args.manifest, args.check, args.ruleset)
    print(summary["summarizer_output"], file=sys.stderr)
    with atomic_open(args.out_csv, "w") as handle:
        handle.write(summary_csv(summary))
    write_json(args.out, summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
