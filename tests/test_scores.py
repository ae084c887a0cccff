"""Score table: olympic mean over seeds, non-converged runs, compliance, ROUGE rows, CSV/Markdown, bad input."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest

from workflow_scripts.scoring import score_table as S
from workflow_scripts.core.errors import PipelineInputError


def _run(tmp_path, workload, seed, ttt, quality, target=0.925, status="success", sps=2.0, **extra):
    path = tmp_path / workload / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"workload": workload, "seed": seed, "status": status, "time_to_train_s": ttt,
                                "final_quality": quality, "target": target, "quality_metric": "eval_loss",
                                "train_samples_per_second": sps, **extra}))
    return path


def _verdict(tmp_path, workload, seed, passed):
    path = tmp_path / f"verdict_{workload}_{seed}.json"
    path.write_text(json.dumps({"log": f"results/train/{workload}/seed{seed}/mlperf_log.txt", "passed": passed,
                                "benchmark": "llama2_70b_lora", "ruleset": "6.1.0", "checker_output": ""}))
    return path


def test_olympic_mean():
    assert S.olympic_mean([10, 1, 4, 7, 100]) == (7.0, "olympic mean of 5 runs")
    assert S.olympic_mean([3.0, 5.0])[0] == 4.0
    assert S.olympic_mean([3.0, math.inf, 5.0])[0] == 5.0  # one failed run is dropped as the slowest
    assert math.isinf(S.olympic_mean([3.0, math.inf, math.inf])[0])


def test_training_rows_aggregate_seeds_and_compliance(tmp_path):
    metrics = [_run(tmp_path, "lora", s, t, q) for s, t, q in ((1, 100.0, 0.92), (2, 300.0, 0.91), (3, 200.0, 0.924),
                                                               (4, 50.0, 0.95))]
    metrics[-1].write_text(metrics[-1].read_text().replace('"success"', '"aborted"'))
    verdicts = [_verdict(tmp_path, "lora", s, True) for s in (1, 2, 3, 4)]
    rows = S.build_rows(None, metrics, verdicts)
    (row,) = rows
    # times 100, 300, 200, inf (not converged): drop 100 and inf -> mean(200, 300)
    assert row["time_to_train_s"] == 250.0 and row["aggregation"] == "olympic mean of 4 runs"
    assert row["passed"] is True and row["compliance"] == "pass" and row["seeds"] == "1 2 3 4"
    assert row["note"] == "3 of 4 runs reached the target"
    failed = S.build_rows(None, metrics, verdicts[:3] + [_verdict(tmp_path, "lora", 4, False)])[0]
    assert failed["compliance"] == "FAIL" and failed["passed"] is False


def test_two_runs_one_failed_is_not_converged(tmp_path):
    metrics = [_run(tmp_path, "pretrain", 1, 10.0, 5.5, target=5.6), _run(tmp_path, "pretrain", 2, 9.0, 5.7, target=5.6)]
    row = S.build_rows(None, metrics, [])[0]
    assert row["time_to_train_s"] == "not converged" and row["passed"] is False
    assert row["aggregation"].startswith("mean of 2 run(s)")


def test_sft_reference_throughput(tmp_path):
    path = _run(tmp_path, "sft", 1, 30.0, 6.2, target=None, sps=1.1, gpus=8, quality_metric=None)
    row = S.build_rows(None, [path], [])[0]
    assert row["reference_throughput"] == 1.247 and row["throughput"] == 1.1 and row["passed"] is True
    assert (row["metric"], row["value"], row["target"]) == ("train_samples_per_second", 1.1, "")


def test_rouge_rows_and_outputs(tmp_path):
    from workflow_scripts.scoring.rouge_score_eval import verdicts

    scores = {"rouge1": 44.0, "rouge2": 22.0, "rougeL": 28.6, "tokens_per_sample": 290.0}
    rouge = tmp_path / "rouge.json"
    rouge.write_text(json.dumps({**scores, "targets": verdicts(scores), "gen_num": 40, "sample_list_size": 400}))
    metrics = [_run(tmp_path, "lora", 1, 100.0, 0.9)]
    csv_out, md_out = tmp_path / "scores.csv", tmp_path / "scores.md"
    assert S.main(["--rouge", str(rouge), "--metrics", *map(str, metrics), "--out-csv", str(csv_out),
                   "--out-md", str(md_out)]) == 0
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text())))
    assert [r["workload"] for r in rows] == ["lora", "llama2-70b-99", "llama2-70b-99.9"]
    assert [r["passed"] for r in rows] == ["True", "True", "False"]  # 44.0 < 44.3868 fails 99.9 only
    md = md_out.read_text()
    assert md.count("\n") == 5 and "| llama2-70b-99.9 |" in md and "FAIL" in md and "40 of 400 samples" in md


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"workload": "lora"')
    with pytest.raises(PipelineInputError, match="metrics.json: not valid JSON"):
        S.build_rows(None, [bad], [])
    bad.write_text('{"workload": "lora"}')
    with pytest.raises(PipelineInputError, match="metrics.json: training metrics lacks seed, status, time_to_train_s"):
        S.build_rows(None, [bad], [])
    with pytest.raises(PipelineInputError, match="rouge.json: ROUGE scores missing"):
        S.build_rows(tmp_path / "rouge.json", [], [])
