"""Gathers the training runs' MLPerf logs into an MLPerf Training submission package (the official layout that
mlperf-logging's package checker reads):

    <out>/results/<system>/<benchmark>/result_<i>.txt     one per run, i = 0.. in the configured seed order
    <out>/systems/<system>.json                           the system description (submitter and division added)
    <out>/benchmarks/<benchmark>/implementations/<name>/  this project's tracked source files, workflow_config.json
                                                          and run_configs/result_<i>.json (each run's resolved config)

CLI: python -m workflow_scripts.scoring.submission_package --out DIR --manifest package.json --submitter S --system ID
        --division closed --ruleset 6.1.0 --implementation NAME --system-desc JSON --workflow-config JSON
        --source-root DIR --run BENCHMARK=results/train/<workload>/seed<N> ...
The manifest (outside the package: the checker refuses unknown files there) maps every result file to its run.
Runs whose log is missing, empty, truncated (no run_stop) or for another benchmark are refused (exit 2), naming the
log; whether the package passes the rules is the package checker's verdict, not this step's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

from workflow_scripts.core.atomic import temp_sibling, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.scoring.compliance import require_complete_log

# Run outputs and caches, never part of the implementation's code when the source root is not a git checkout (a
# copy of the workflow); hidden folders (.git, .venv, .snakemake) are skipped too.
SKIPPED_DIRS = {"results", "logs", "checkpoints", "__pycache__"}


def parse_run(arg: str) -> tuple[str, Path]:
    benchmark, sep, run = arg.partition("=")
    if not sep or not benchmark or not run:
        raise PipelineInputError(f"--run {arg!r}: expected BENCHMARK=RUN_FOLDER")
    return benchmark, Path(run)


def checked_log(run: Path, benchmark: str) -> Path:
    """The run's mlperf_log.txt, refused (naming it) when it cannot be a result file of `benchmark`."""
    log = run / "mlperf_log.txt"
    require_complete_log(log, benchmark)
    if not (run / "resolved_config.json").is_file():
        raise PipelineInputError(f"{run / 'resolved_config.json'}: resolved config of the run missing")
    return log


def source_files(root: Path) -> list[str]:
    """This project's code: `git ls-files` of a checkout, else every file outside run outputs and caches."""
    proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout:
        names = [n for n in proc.stdout.split("\0") if n]
        return sorted(n for n in names if (root / n).is_file())  # a tracked file deleted in the work tree is gone
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")]
        found += [str((Path(folder) / f).relative_to(root)) for f in files]
    return sorted(found)


def system_description(desc_json: str, submitter: str, division: str) -> dict[str, Any]:
    try:
        desc = json.loads(desc_json)
    except json.JSONDecodeError as err:
        raise PipelineInputError(f"submission.system_desc: not JSON: {err}") from None
    if not isinstance(desc, dict):
        raise PipelineInputError("submission.system_desc: not a mapping")
    return {"submitter": submitter, "division": division, **desc}


def write_implementation(folder: Path, root: Path, files: Sequence[str], workflow_config: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, target)
    (folder / "workflow_config.json").write_text(json.dumps(json.loads(workflow_config), indent=2, sort_keys=True))


def write_package(tmp: Path, args: argparse.Namespace, runs: dict[str, list[Path]]) -> dict[str, Any]:
    """The package under `tmp`; returns the manifest."""
    system_dir = tmp / "results" / args.system
    (tmp / "systems").mkdir(parents=True)
    desc = system_description(args.system_desc, args.submitter, args.division)
    (tmp / "systems" / f"{args.system}.json").write_text(json.dumps(desc, indent=2) + "\n")
    files = source_files(args.source_root)
    benchmarks: dict[str, Any] = {}
    for benchmark, folders in runs.items():
        impl = tmp / "benchmarks" / benchmark / "implementations" / args.implementation
        write_implementation(impl, args.source_root, files, args.workflow_config)
        (system_dir / benchmark).mkdir(parents=True)
        (impl / "run_configs").mkdir()
        results = {}
        for i, run in enumerate(folders):
            shutil.copyfile(checked_log(run, benchmark), system_dir / benchmark / f"result_{i}.txt")
            shutil.copyfile(run / "resolved_config.json", impl / "run_configs" / f"result_{i}.json")
            results[f"result_{i}.txt"] = str(run)
        benchmarks[benchmark] = {"runs": len(folders), "results": results, "workload": workload_of(folders[0])}
    return {"submitter": args.submitter, "system": args.system, "division": args.division, "ruleset": args.ruleset,
            "implementation": args.implementation, "source_files": len(files), "benchmarks": benchmarks}


def workload_of(run: Path) -> str:
    match = re.search(r"([^/]+)/seed\d+/?$", str(run))
    return match.group(1) if match else ""


def build(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[Path]] = {}
    for benchmark, run in map(parse_run, args.run):
        runs.setdefault(benchmark, []).append(run)
    if not runs:
        raise PipelineInputError("submission: no run of an MLPerf benchmark is configured (train.lora, train.pretrain)")
    tmp = temp_sibling(args.out)
    try:
        manifest = write_package(tmp, args, runs)
        shutil.rmtree(args.out, ignore_errors=True)
        os.replace(tmp, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.manifest, {**manifest, "package": str(args.out)})
    return manifest


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.scoring.submission_package",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the package folder, results/submission/<submitter>")
    p.add_argument("--manifest", type=Path, required=True)
    for name in ("submitter", "system", "division", "ruleset", "implementation", "system-desc", "workflow-config"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--source-root", type=Path, required=True, help="the workflow's folder (its code)")
    p.add_argument("--run", nargs="*", default=[], help="BENCHMARK=RUN_FOLDER, in result order")
    return p


def _body(argv: Sequence[str] | None) -> int:
    manifest = build(_parser().parse_args(argv))
    for benchmark, entry in manifest["benchmarks"].items():
        print(f"{benchmark}: {entry['runs']} result file(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
