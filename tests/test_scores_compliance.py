"""Compliance verdicts for the score table: pass and fail are recorded; missing, truncated, other-benchmark logs refused."""
from __future__ import annotations

import json

from workflow_scripts.scoring.compliance import main
from workflow_scripts.scoring.mlperf_log import LoraHyperparameters, LoraRunLog, Submission
from workflow_scripts.scoring.score_table import build_rows

HP = LoraHyperparameters(
    global_batch_size=8, learning_rate=4e-4, training_steps=1024, weight_decay=1e-4, gradient_clip_norm=0.3,
    lora_rank=16, lora_alpha=32, gradient_accumulation_steps=1, train_samples=3901, eval_samples=173, seed=1234,
    config_filename="config.yaml",
)


def _log(tmp_path, seed, evals, stop=True):
    path = tmp_path / "train" / "lora" / f"seed{seed}" / "mlperf_log.txt"
    path.parent.mkdir(parents=True)
    log = LoraRunLog(path)
    log.init(Submission(), HP)
    log.run_start()
    log.block_start(0)
    samples = 0
    for i, loss in enumerate(evals):
        samples = 1536 + 384 * i
        log.train_loss(1.0, samples, 4e-4)
        log.evaluation(loss, samples)
        log.block_start(samples)
    if stop:
        log.run_stop(samples, evals[-1] <= 0.925)
    log.close()
    return path


def _verdict(log, tmp_path, capsys=None):
    out = tmp_path / f"verdict_{log.parent.name}.json"
    rc = main(["--record", "--log", str(log), "--benchmark", "llama2_70b_lora", "--ruleset", "6.1.0", "--out", str(out)])
    return rc, out


def test_pass_and_fail_are_both_recorded_and_reach_the_table(tmp_path):
    rc_ok, ok = _verdict(_log(tmp_path, 1, (0.95, 0.92)), tmp_path)
    rc_bad, bad = _verdict(_log(tmp_path, 2, (0.99, 0.97)), tmp_path)  # never reaches 0.925: the checker fails it
    assert (rc_ok, rc_bad) == (0, 0)
    assert json.loads(ok.read_text())["passed"] is True
    assert json.loads(bad.read_text())["passed"] is False
    metrics = []
    for seed in (1, 2):
        path = tmp_path / f"metrics{seed}.json"
        path.write_text(json.dumps({"workload": "lora", "seed": seed, "status": "success", "time_to_train_s": 10.0,
                                    "final_quality": 0.92, "target": 0.925}))
        metrics.append(path)
    (row,) = build_rows(None, metrics, [ok, bad])
    assert row["compliance"] == "FAIL" and row["passed"] is False
    assert build_rows(None, metrics, [ok])[0]["compliance"] == "pass"


def test_truncated_missing_and_foreign_logs_are_refused(tmp_path, capsys):
    truncated = _log(tmp_path, 3, (0.95, 0.92), stop=False)
    rc, out = _verdict(truncated, tmp_path)
    assert rc == 2 and not out.exists()
    assert f"{truncated}: truncated MLPerf log: no run_stop record" in capsys.readouterr().err
    rc, out = _verdict(tmp_path / "nope" / "seed9" / "mlperf_log.txt", tmp_path)
    assert rc == 2 and "mlperf_log.txt: MLPerf log missing or empty" in capsys.readouterr().err
    foreign = _log(tmp_path, 4, (0.95, 0.92))
    foreign.write_text(foreign.read_text().replace('"value": "llama2_70b_lora"', '"value": "llama31_405b"'))
    rc, out = _verdict(foreign, tmp_path)
    assert rc == 2 and "log is for benchmark 'llama31_405b', expected 'llama2_70b_lora'" in capsys.readouterr().err
