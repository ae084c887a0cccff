"""The submission package under the official tools' own verdicts: mlperf-logging's package checker passes 10
converged llama2_70b_lora runs and fails 9 runs, tampered logs, a system JSON without a required field and (closed
division) the demo's fast convergence; its result summarizer's score agrees with the score table's."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from mlperf_logging.mllog import mllog

from workflow_scripts.scoring import package_check as P
from workflow_scripts.scoring import score_table as S
from workflow_scripts.scoring.mlperf_log import LoraHyperparameters, LoraRunLog, Submission
from workflow_scripts.scoring.submission_package import main as package_main

HP = LoraHyperparameters(
    global_batch_size=8, learning_rate=4e-4, training_steps=1024, weight_decay=1e-4, gradient_clip_norm=0.3,
    lora_rank=16, lora_alpha=32, gradient_accumulation_steps=1, train_samples=3901, eval_samples=173, seed=0,
    config_filename="config.yaml",
)
DESC = {"system_name": "test machine", "status": "Research, Development, or Internal (RDI)", "number_of_nodes": "1",
        "host_processors_per_node": "1", "host_processor_core_count": "2", "accelerators_per_node": "0",
        **{k: "N/A" for k in ("host_processor_model_name", "host_processor_vcpu_count", "host_processor_frequency",
                              "host_processor_caches", "host_processor_interconnect", "host_memory_capacity",
                              "host_storage_type", "host_storage_capacity", "host_networking",
                              "host_networking_topology", "host_memory_configuration", "accelerator_model_name",
                              "accelerator_host_interconnect", "accelerator_frequency", "accelerator_on-chip_memories",
                              "accelerator_memory_configuration", "accelerator_memory_capacity",
                              "accelerator_interconnect", "accelerator_interconnect_topology", "cooling", "hw_notes",
                              "framework", "other_software_stack", "operating_system", "sw_notes")}}
T0_MS = 1_700_000_000_000


def _run(root, seed, converge_at, seconds, monkeypatch):
    """One compliant run: evaluations every 384 samples, the target (0.925) reached at `converge_at` samples, and
    run_start .. run_stop `seconds` apart (the logger's clock is set), as results/train/lora/seed<seed>/ holds it."""
    run = root / "train" / "lora" / f"seed{seed}"
    run.mkdir(parents=True)
    clock = [T0_MS]
    monkeypatch.setattr(mllog, "_current_time_ms", lambda: clock[0])
    log = LoraRunLog(run / "mlperf_log.txt")
    log.init(Submission(), replace(HP, seed=seed))
    log.run_start()
    log.block_start(0)
    for samples in range(converge_at - 384 * 2, converge_at + 1, 384):
        log.train_loss(1.0, samples, 4e-4)
        log.evaluation(0.92 if samples == converge_at else 0.95, samples)
        log.block_start(samples)
    clock[0] = T0_MS + int(seconds * 1000)
    log.run_stop(converge_at, True)
    log.close()
    (run / "resolved_config.json").write_text(json.dumps({"recipe": "test", "seed": seed}))
    (run / "metrics.json").write_text(json.dumps({
        "workload": "lora", "seed": seed, "status": "success", "time_to_train_s": seconds, "final_quality": 0.92,
        "target": 0.925, "quality_metric": "eval_loss"}))
    return run


def _package(tmp_path, runs, division="closed"):
    source = tmp_path / "src"
    (source / "workflow_scripts").mkdir(parents=True, exist_ok=True)
    (source / "workflow_scripts" / "x.py").write_text("print('code')\n")
    for output in ("checkpoints/demo", "results/train", ".snakemake/log"):  # run outputs: not code
        (source / output).mkdir(parents=True, exist_ok=True)
        (source / output / "f.txt").write_text("x")
    out, manifest = tmp_path / "submission" / "org", tmp_path / "submission" / "package.json"
    rc = package_main(["--out", str(out), "--manifest", str(manifest), "--submitter", "org", "--system", "sys1",
                       "--division", division, "--ruleset", "6.1.0", "--implementation", "pipeline",
                       "--system-desc", json.dumps(DESC), "--workflow-config", "{}", "--source-root", str(source),
                       "--run", *[f"llama2_70b_lora={run}" for run in runs]])
    assert rc == 0
    return out, manifest


SECONDS = [100.0 + 37.0 * i for i in range(10)]


@pytest.fixture(scope="module")
def ten_runs(tmp_path_factory):
    """10 runs converging at 3,456 samples (above the RCP mean at GBS 8, 3,178.7: no score scaling)."""
    root = tmp_path_factory.mktemp("ten")
    with pytest.MonkeyPatch.context() as monkeypatch:
        runs = [_run(root, 1000 + i, 3456, SECONDS[i], monkeypatch) for i in range(10)]
    return root, runs


def test_layout_of_the_package(ten_runs, tmp_path):
    _, runs = ten_runs
    out, manifest = _package(tmp_path, runs)
    results = sorted(p.name for p in (out / "results" / "sys1" / "llama2_70b_lora").iterdir())
    assert results == [f"result_{i}.txt" for i in range(10)]
    assert (out / "results/sys1/llama2_70b_lora/result_3.txt").read_text() == (runs[3] / "mlperf_log.txt").read_text()
    desc = json.loads((out / "systems" / "sys1.json").read_text())
    assert (desc["submitter"], desc["division"], desc["cooling"]) == ("org", "closed", "N/A")
    impl = out / "benchmarks/llama2_70b_lora/implementations/pipeline"
    assert (impl / "workflow_scripts/x.py").is_file() and (impl / "workflow_config.json").is_file()
    assert not any((impl / name).exists() for name in ("checkpoints", "results", ".snakemake"))
    assert json.loads((impl / "run_configs/result_3.json").read_text())["seed"] == 1003
    entry = json.loads(manifest.read_text())["benchmarks"]["llama2_70b_lora"]
    assert entry["workload"] == "lora" and entry["results"]["result_0.txt"] == str(runs[0])


def test_ten_converged_runs_pass_and_the_summarizer_agrees_with_the_score_table(ten_runs, tmp_path):
    root, runs = ten_runs
    out, manifest = _package(tmp_path, runs)
    check = P.check(out, "6.1.0", rcp_bypass=False)
    assert check["passed"], check["checker_output"][-3000:]
    assert check["reason"] == "" and check["rcp"]["llama2_70b_lora"] == {"passed": True, "message": "RCP found"}
    check_path = tmp_path / "check.json"
    check_path.write_text(json.dumps(check))
    summary = P.summarize(out, manifest, check_path, "6.1.0")
    (score,) = summary["benchmarks"]
    assert score["rcp"] == "Pass" and score["rcp_scaling_factor"] == 1.0 and score["samples_to_converge"] == 3456
    olympic_min = sum(sorted(SECONDS)[1:-1]) / 8 / 60
    assert score["time_to_train_min"] == pytest.approx(olympic_min, abs=1e-6)
    summary_path = tmp_path / "summary.json"
    summary_path.write_text(json.dumps(summary))
    rows = S.build_rows(None, [run / "metrics.json" for run in runs], [], check_path, summary_path)
    lora = next(r for r in rows if r["workload"] == "lora")
    assert lora["time_to_train_s"] / 60 == pytest.approx(lora["mlperf_time_to_train_min"], abs=1e-5)
    package = next(r for r in rows if r["workload"] == "submission package")
    assert package["value"] == "PASS" and package["passed"] is True
    assert not list(out.rglob("scaling.json"))  # the tools ran on copies: the DAG's package is as gathered


def test_nine_runs_fail_naming_the_count(ten_runs, tmp_path):
    out, _ = _package(tmp_path, ten_runs[1][:9])
    check = P.check(out, "6.1.0", rcp_bypass=False)
    assert not check["passed"] and "found 9, expected 10" in check["reason"]
    assert str(out) in check["reason"]  # the package's path, not the checker's temporary copy


def test_tampered_logs(ten_runs, tmp_path):
    """A tampered (non-compliant) result fails the package naming it: the official checker accepts one such file
    of 10 under olympic scoring with a warning (recorded as official_passed), two it fails itself."""
    out, _ = _package(tmp_path, ten_runs[1])
    folder = out / "results/sys1/llama2_70b_lora"
    for i in (0, 1):
        path = folder / f"result_{i}.txt"
        path.write_text(path.read_text().replace('"key": "lora_rank", "value": 16', '"key": "lora_rank", "value": 8'))
        check = P.check(out, "6.1.0", rcp_bypass=False)
        if i == 0:
            assert check["official_passed"] and "1 file does not comply, accepting this under olympic scoring" in check["warnings"]
            assert not check["passed"] and check["noncompliant_results"] == ["sys1/llama2_70b_lora/result_0.txt"]
            assert check["reason"].startswith("sys1/llama2_70b_lora/result_0.txt: not compliant")
    assert not check["passed"] and "2 files do not comply, directory cannot be accepted" in check["reason"]
    assert check["noncompliant_results"] == ["sys1/llama2_70b_lora/result_0.txt", "sys1/llama2_70b_lora/result_1.txt"]


def test_system_json_missing_a_required_field_fails(ten_runs, tmp_path):
    out, _ = _package(tmp_path, ten_runs[1])
    system = out / "systems/sys1.json"
    desc = json.loads(system.read_text())
    del desc["cooling"]
    system.write_text(json.dumps(desc))
    check = P.check(out, "6.1.0", rcp_bypass=False)
    assert not check["passed"] and "Missing field cooling" in check["reason"]
    assert "System description file checker failed" in check["reason"]


def test_demo_fast_convergence_fails_the_rcp_check_unless_bypassed_or_open(tmp_path, monkeypatch):
    """The demo LoRA converges at 1,536 samples; at GBS 8 the RCP accepts a mean of >= 2,960.6 (mean 3,178.7 / max
    speedup 1.074)."""
    runs = [_run(tmp_path / "runs", 2000 + i, 1536, 60.0 + i, monkeypatch) for i in range(10)]
    out, _ = _package(tmp_path / "closed", runs)
    check = P.check(out, "6.1.0", rcp_bypass=False)
    assert not check["passed"] and "RCP Test Failed: RCP found" in check["reason"]
    bypassed = P.check(out, "6.1.0", rcp_bypass=True)
    assert bypassed["passed"] and bypassed["rcp"]["llama2_70b_lora"]["message"] == "RCP found passed using rcp_bypass"
    assert "RCP test failed but allowed to proceed with RCP bypass." in bypassed["warnings"]
    out_open, _ = _package(tmp_path / "open", runs, division="open")
    opened = P.check(out_open, "6.1.0", rcp_bypass=False)
    assert opened["passed"] and opened["rcp"] == {}  # open division: no seed or RCP check at all


def test_faster_than_the_rcp_mean_scales_the_summarizer_score(tmp_path, monkeypatch):
    runs = [_run(tmp_path / "runs", 3000 + i, 3072, 200.0 + 10 * i, monkeypatch) for i in range(10)]
    out, manifest = _package(tmp_path, runs)
    check = P.check(out, "6.1.0", rcp_bypass=False)
    factor = 3178.6666666666665 / 3072
    assert check["passed"] and check["rcp_scaling"] == {"llama2_70b_lora": pytest.approx(factor)}
    (tmp_path / "check.json").write_text(json.dumps(check))
    (score,) = P.summarize(out, manifest, tmp_path / "check.json", "6.1.0")["benchmarks"]
    unscaled = sum(200.0 + 10 * i for i in range(1, 9)) / 8 / 60
    assert score["time_to_train_min"] == pytest.approx(unscaled * factor, abs=1e-6)
    assert math.isclose(score["rcp_scaling_factor"], factor, rel_tol=1e-9)


def test_unreadable_inputs_fail_the_job(ten_runs, tmp_path, capsys):
    runs = ten_runs[1]
    args = ["--out", str(tmp_path / "o"), "--manifest", str(tmp_path / "m.json"), "--submitter", "o", "--system", "s",
            "--division", "closed", "--ruleset", "6.1.0", "--implementation", "i", "--system-desc", "{}",
            "--workflow-config", "{}", "--source-root", str(tmp_path), "--run"]
    assert package_main([*args, f"llama2_70b_lora={tmp_path / 'none/seed1'}"]) == 2
    assert "none/seed1/mlperf_log.txt: MLPerf log missing or empty" in capsys.readouterr().err
    assert package_main([*args, f"llama31_8b={runs[0]}"]) == 2
    assert "log is for benchmark 'llama2_70b_lora', expected 'llama31_8b'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.json").exists()
    assert P.main(["check", "--package", str(tmp_path / "nope"), "--ruleset", "6.1.0", "--out", str(tmp_path / "c.json")]) == 2
    assert "nope: not a submission package" in capsys.readouterr().err
