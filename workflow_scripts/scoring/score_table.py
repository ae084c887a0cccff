"""One score table (CSV + Markdown) of a DAG run: each workload's quality metric against its target, time to train,
throughput, compliance and pass/fail, aggregated over seeds as MLPerf's result summarizer does.

    python -m workflow_scripts.scoring.score_table --out-csv scores.csv --out-md scores.md [--rouge rouge.json]
        [--metrics results/train/*/seed*/metrics.json ...] [--compliance verdict.json ...]
        [--package-check results/submission/package_check.json --summary results/submission/summary.json]

Time to train over seeds: with >= 3 runs the olympic mean (drop the fastest and the slowest, mean of the rest); a run
that did not reach its target counts as infinitely slow, so one such run is dropped and two make the result
"not converged". With fewer runs the plain mean is reported and the aggregation column says so.

Beside this, the official tools' view of the same runs: a "submission package" row with the package checker's
verdict (and why it fails), and on each MLPerf benchmark's row the result summarizer's score
(mlperf_time_to_train_min: its olympic mean of run_start..run_stop in minutes, times the RCP scaling factor) and
RCP outcome. Where both apply (>= 3 runs, all converged) time_to_train_s / 60 x rcp_scaling_factor is that score.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Sequence

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.json_input import read_json_object

COLUMNS = ("workload", "metric", "value", "target", "passed", "runs", "seeds", "time_to_train_s", "aggregation",
           "throughput", "throughput_unit", "reference_throughput", "compliance", "note", "mlperf_time_to_train_min",
           "rcp", "rcp_scaling_factor")
# NVIDIA DGXC hf-llama2 recipe (24.02, BF16, H100): train_samples_per_second by GPU count (spec 5.3).
SFT_PUBLISHED_SAMPLES_PER_S = {8: 1.247, 16: 3.664, 32: 9.432, 64: 21.905, 128: 47.342, 256: 95.339, 512: 154.931}
MIN_OLYMPIC_RUNS = 3


def olympic_mean(values: Sequence[float]) -> tuple[float, str]:
    """Mean without the smallest and largest value when there are >= 3, else the plain mean."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) >= MIN_OLYMPIC_RUNS:
        kept = ordered[1:-1]
        how = f"olympic mean of {len(ordered)} runs"
    else:
        kept = ordered
        how = f"mean of {len(ordered)} run(s) (olympic needs >= {MIN_OLYMPIC_RUNS})"
    if any(math.isinf(v) for v in kept):
        return math.inf, how
    return sum(kept) / len(kept), how


def read_json(path: Path | str, what: str, required: Sequence[str]) -> dict[str, Any]:
    data = read_json_object(path, what)
    missing = [k for k in required if k not in data]
    if missing:
        raise PipelineInputError(f"{path}: {what} lacks {', '.join(missing)}")
    return data


def rouge_rows(rouge: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per accuracy target (llama2-70b-99, -99.9): the three ROUGE scores and tokens per sample."""
    rows = []
    for name, verdict in rouge["targets"].items():
        checks = verdict["checks"]
        value = " / ".join(f"{k} {checks[k]['value']:.4f}" for k in ("rouge1", "rouge2", "rougeL"))
        target = " / ".join(f">= {checks[k]['min']:.4f}" for k in ("rouge1", "rouge2", "rougeL"))
        tps = checks["tokens_per_sample"]
        rows.append({
            "workload": name, "metric": "rouge1 / rouge2 / rougeL", "value": value, "target": target,
            "passed": verdict["passed"], "runs": 1,
            "note": f"tokens_per_sample {tps['value']} (bounds {tps['min']:.3f}..{tps['max']:.3f}); "
                    f"{rouge['gen_num']} of {rouge.get('sample_list_size', rouge['gen_num'])} samples",
        })
    return rows


def _converged(run: dict[str, Any]) -> bool:
    if run.get("target") is None:
        return run.get("status") not in ("aborted", "fail")
    quality = run.get("final_quality")
    return quality is not None and run.get("status") == "success" and quality <= run["target"]


def training_row(workload: str, runs: list[dict[str, Any]], verdicts: dict[tuple[str, int], bool]) -> dict[str, Any]:
    """The aggregate of every seed of one training workload."""
    runs = sorted(runs, key=lambda r: r["seed"])
    times = [r["time_to_train_s"] if _converged(r) else math.inf for r in runs]
    ttt, how = olympic_mean(times)
    throughputs = [r["train_samples_per_second"] for r in runs if r.get("train_samples_per_second") is not None]
    throughput = sum(throughputs) / len(throughputs) if throughputs else None
    qualities = [r["final_quality"] for r in runs if r.get("final_quality") is not None]
    checked = [verdicts[(workload, r["seed"])] for r in runs if (workload, r["seed"]) in verdicts]
    compliance = "" if not checked else ("pass" if all(checked) else "FAIL")
    gpus = {r.get("gpus") for r in runs}  # GPU count, where the run records it (needed for the published SFT table)
    reference = SFT_PUBLISHED_SAMPLES_PER_S.get(next(iter(gpus))) if workload == "sft" and len(gpus) == 1 else None
    target = runs[0].get("target")
    metric = runs[0].get("quality_metric")
    if metric:
        value: Any = round(sum(qualities) / len(qualities), 6) if qualities else ""
    else:  # a throughput workload (SFT): its score is the throughput
        value = round(throughput, 3) if throughput is not None else ""
    return {
        "workload": workload, "metric": metric or "train_samples_per_second", "value": value,
        "target": f"<= {target}" if target is not None else "", "passed": math.isfinite(ttt) and compliance != "FAIL",
        "runs": len(runs), "seeds": " ".join(str(r["seed"]) for r in runs),
        "time_to_train_s": round(ttt, 3) if math.isfinite(ttt) else "not converged", "aggregation": how,
        "throughput": round(throughput, 3) if throughput is not None else "", "throughput_unit": "samples/s",
        "reference_throughput": reference if reference is not None else "", "compliance": compliance,
        "note": f"{sum(map(_converged, runs))} of {len(runs)} runs reached the target",
    }


def run_of_log(log: str, verdict: Path | str) -> tuple[str, int]:
    """(workload, seed) of a training log results/train/<workload>/seed<seed>/mlperf_log.txt."""
    match = re.search(r"([^/]+)/seed(\d+)/[^/]+$", log)
    if not match:
        raise PipelineInputError(f"{verdict}: log {log!r} is not under <workload>/seed<N>/")
    return match.group(1), int(match.group(2))


def package_row(check: dict[str, Any]) -> dict[str, Any]:
    """The package checker's verdict on the submission package (rules/submission.smk)."""
    bypass = " with --rcp-bypass" if check.get("rcp_bypass") else ""
    return {"workload": "submission package", "metric": f"mlperf-logging package checker, ruleset {check['ruleset']}"
            f"{bypass}", "value": "PASS" if check["passed"] else "FAIL", "passed": bool(check["passed"]),
            "note": check.get("reason") or "; ".join(check.get("warnings", []))}


def add_summary(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The summarizer's score and RCP outcome on the row of the workload each benchmark's runs came from."""
    by_workload = {row["workload"]: row for row in rows}
    for entry in summary["benchmarks"]:
        row = by_workload.get(entry["workload"])
        if row is None:
            continue
        score = entry.get("time_to_train_min")
        row["mlperf_time_to_train_min"] = round(score, 6) if score is not None else "no score"
        row["rcp"] = entry.get("rcp", "")
        row["rcp_scaling_factor"] = entry.get("rcp_scaling_factor") if entry.get("rcp_scaling_factor") is not None else ""


def build_rows(rouge: Path | None, metrics: Sequence[Path], compliance: Sequence[Path],
               package_check: Path | None = None, summary: Path | None = None) -> list[dict[str, Any]]:
    verdicts: dict[tuple[str, int], bool] = {}
    for path in compliance:
        data = read_json(path, "compliance verdict", ("passed", "log"))
        verdicts[run_of_log(data["log"], path)] = bool(data["passed"])
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for path in metrics:
        run = read_json(path, "training metrics", ("workload", "seed", "status", "time_to_train_s"))
        by_workload.setdefault(run["workload"], []).append(run)
    rows = [training_row(w, runs, verdicts) for w, runs in sorted(by_workload.items())]
    if summary is not None:
        add_summary(rows, read_json(summary, "submission summary", ("benchmarks",)))
    if package_check is not None:
        rows.append(package_row(read_json(package_check, "package check verdict", ("passed", "ruleset"))))
    if rouge is not None:
        rows += rouge_rows(read_json(rouge, "ROUGE scores", ("targets", "gen_num")))
    return [{c: row.get(c, "") for c in COLUMNS} for row in rows]


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "PASS" if value else "FAIL"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _body(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.scoring.score_table", description=__doc__.split("\n")[0])
    p.add_argument("--rouge", type=Path, help="rouge.json of rouge_score_eval")
    p.add_argument("--metrics", type=Path, nargs="*", default=[], help="metrics.json of each training run")
    p.add_argument("--compliance", type=Path, nargs="*", default=[], help="verdicts of workflow_scripts.scoring.compliance")
    p.add_argument("--package-check", type=Path, help="package_check.json of workflow_scripts.scoring.package_check")
    p.add_argument("--summary", type=Path, help="summary.json of workflow_scripts.scoring.package_check summarize")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)
    args = p.parse_args(argv)
    rows = build_rows(args.rouge, args.metrics, args.compliance, args.package_check, args.summary)
    if not rows:
        raise PipelineInputError("score table: no inputs (give --rouge and/or --metrics)")
    with atomic_open(args.out_csv, "w") as handle:
        handle.write(to_csv(rows))
    with atomic_open(args.out_md, "w") as handle:
        handle.write(to_markdown(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
