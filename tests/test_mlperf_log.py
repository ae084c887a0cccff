"""Our llama2_70b_lora log passes the official, unmodified compliance checker; the checker catches what it should."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from workflow_scripts.scoring.compliance import check_log, main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.scoring.mlperf_log import LoraHyperparameters, LoraRunLog, Submission

HP = LoraHyperparameters(
    global_batch_size=8, learning_rate=4e-4, training_steps=1024, weight_decay=1e-4, gradient_clip_norm=0.3,
    lora_rank=16, lora_alpha=32, gradient_accumulation_steps=1, train_samples=3901, eval_samples=173, seed=1234,
    config_filename="config.yaml",
)


def _write(path, hp=HP, evals=(0.95, 0.92), success=True):
    log = LoraRunLog(path)
    log.init(Submission(), hp)
    log.run_start()
    samples = 0
    log.block_start(0)
    for i, loss in enumerate(evals):
        samples = 1536 + 384 * i
        log.train_loss(1.0, samples, 3e-4)
        log.evaluation(loss, samples)
        log.block_start(samples)
    log.run_stop(samples, success)
    log.close()
    return path


@pytest.mark.parametrize("ruleset", ["4.0.0", "5.0.0", "5.1.0", "6.1.0"])
def test_log_passes_official_checker(tmp_path, ruleset):
    verdict = check_log(_write(tmp_path / "result_0.txt"), "llama2_70b_lora", ruleset)
    assert verdict.passed, verdict.checker_output
    assert not (tmp_path / "compliance_checker.log").exists()


def test_lines_are_mllog_json(tmp_path):
    lines = _write(tmp_path / "r.txt").read_text().splitlines()
    records = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in lines]
    keys = [r["key"] for r in records]
    assert keys[:3] == ["cache_clear", "init_start", "submission_benchmark"] and keys[-1] == "run_stop"
    assert records[-1]["metadata"]["status"] == "success"
    evals = [r for r in records if r["key"] == "eval_accuracy"]
    assert [e["metadata"]["samples_count"] for e in evals] == [1536, 1920]


@pytest.mark.parametrize(
    "hp,evals,why",
    [
        (replace(HP, lora_rank=8), (0.9,), "lora_rank"),
        (HP, (0.95, 0.93), "eval_accuracy"),  # never reaches the 0.925 target
    ],
)
def test_checker_rejects_non_compliant_runs(tmp_path, hp, evals, why):
    verdict = check_log(_write(tmp_path / "r.txt", hp, evals), "llama2_70b_lora", "6.1.0")
    assert not verdict.passed and why in verdict.checker_output


def test_bad_logs_are_named(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(PipelineInputError, match=f"{empty}: MLPerf log missing or empty"):
        check_log(empty, "llama2_70b_lora")
    other = _write(tmp_path / "other.txt")
    other.write_text(other.read_text().replace('"llama2_70b_lora"', '"llama31_8b"'))
    with pytest.raises(PipelineInputError, match="benchmark 'llama31_8b', expected 'llama2_70b_lora'"):
        check_log(other, "llama2_70b_lora")
    assert main(["--log", str(empty), "--benchmark", "llama2_70b_lora", "--ruleset", "6.1.0", "--out",
                 str(tmp_path / "v.json")]) == 2
    assert not (tmp_path / "v.json").exists()


def test_pretrain_log_with_reference_hyperparameters_passes_405b_rules(tmp_path):
    from workflow_scripts.scoring.mlperf_log import PretrainHyperparameters, PretrainRunLog
    from workflow_scripts.train.train_config import llama31_405b_pretrain_2304xh100_bf16

    cfg = llama31_405b_pretrain_2304xh100_bf16(global_batch_size=2304)
    hp = PretrainHyperparameters.from_config(cfg, gradient_accumulation_steps=144, eval_samples=cfg.eval_samples)
    log = PretrainRunLog(tmp_path / "r.txt")
    log.init(Submission(), hp)
    log.run_start()
    log.block_start(0)
    log.evaluation(5.7, 18432)
    log.block_start(18432)
    log.evaluation(5.55, 36864)
    log.run_stop(36864, True)
    log.close()
    for ruleset in ("5.0.0", "5.1.0"):
        verdict = check_log(tmp_path / "r.txt", "llama31_405b", ruleset)
        assert verdict.passed, verdict.checker_output


@pytest.mark.parametrize("recipe", ["llama31_8b_pretrain_8xh100_bf16", "llama31_8b_pretrain_8xh100_fp8"])
def test_pretrain_log_of_the_8b_recipes_passes_8b_rules(tmp_path, recipe):
    """The recipes' logged values (the trainer's mapping, PretrainHyperparameters.from_config) pass closed_llama31_8b
    of rulesets 5.1.0, 6.0.0 and 6.1.0 (its precision and layout disclosure): sequence 8192, 1,024 evaluation
    sequences, max_steps 1,200,000, decay, AdamW."""
    from workflow_scripts.scoring.mlperf_log import PretrainHyperparameters, PretrainRunLog
    from workflow_scripts.train.train_config import build_config

    cfg = build_config(recipe, {})
    hp = PretrainHyperparameters.from_config(cfg, gradient_accumulation_steps=4, eval_samples=cfg.eval_samples,
                                             attention_fp8=cfg.fp8_attention)
    log = PretrainRunLog(tmp_path / "r.txt")
    log.benchmark = cfg.benchmark_name
    log.init(Submission(), hp)
    log.run_start()
    log.block_start(0)
    log.evaluation(3.5, 12288)
    log.block_start(12288)
    log.evaluation(3.29, 24576)
    log.run_stop(24576, True)
    log.close()
    for ruleset in ("5.1.0", "6.0.0", "6.1.0"):
        verdict = check_log(tmp_path / "r.txt", "llama31_8b", ruleset)
        assert verdict.passed, verdict.checker_output
