"""workflow_scripts/dag: the DAG's layout and its training jobs, derived from the config at parse time."""
from __future__ import annotations

import re

import pytest

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.dag import layout as paths
from workflow_scripts.dag.layout import Layout, quoted_flags, tokenizer_file
from workflow_scripts.dag.train_jobs import conversion, generate_resources, train_jobs, verify_resources
from workflow_scripts.plan.planner import load_config


def _layout(repo, *configfiles, check_inputs=False, **changes):
    config = load_config(repo, list(configfiles))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return Layout(config, check_inputs=check_inputs)


def test_tokenizer_lookup_takes_a_file_a_folder_or_the_demo_tokenizer(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    assert tokenizer_file("") == paths.DEMO_TOKENIZER
    assert tokenizer_file(str(tmp_path)) == str(tmp_path / "tokenizer.json")
    assert tokenizer_file(str(tmp_path / "tokenizer.json")) == str(tmp_path / "tokenizer.json")


def test_flags_quote_values_and_drop_false_switches():
    assert quoted_flags({"bos-token": "<s>", "n": 3, "on": True, "off": False}) == "--bos-token '<s>' --n 3 --on"


def test_demo_targets_name_every_stage_once(repo):
    targets = _layout(repo).targets()
    assert len(targets) == len(set(targets))
    for expected in (paths.CONVERT_PARITY, "results/govreport/train.npy", "results/inference/rouge.json",
                     "results/train/lora/seed1234/metrics.json", "results/scores/scores.md",
                     "results/scores/compliance/lora/seed1234.json", "results/report/benchmarks/rules.svg"):
        assert expected in targets
    assert not set(_layout(repo).report_figures()) & set(_layout(repo).stage_targets())


def test_demo_training_jobs_are_cpu_sized_and_convert_for_the_local_spec(repo):
    layout = _layout(repo)
    jobs = train_jobs(layout)
    assert sorted(jobs) == ["lora", "pretrain", "sft"]
    for job in jobs.values():
        res = job.resources()
        assert res["gpu"] == 0 and res["mem_mb"] <= 8000 and res["nodes"] == 1 and res["mpi"] is None
        assert job.launcher() == "torchrun --standalone --nproc-per-node 1"
    conv = conversion(layout, jobs)
    assert (conv.tp, conv.pp, conv.spec, conv.on_gpus) == (1, 1, "local", False)
    assert generate_resources(layout, conv)["gpu"] == 0 and verify_resources(conv)["gpu"] == 0
    # The trainer's data paths are the rule's inputs.
    lora = jobs["lora"]
    assert lora.inputs["train"] == lora.data["train_data"][0] == layout.govreport_npy("train")


def test_70b_lora_config_asks_for_a_gpu_node_and_converts_at_the_recipe_layout(repo):
    layout = _layout(repo, "configs/llama2_70b_lora_8xh100.yaml")
    jobs = train_jobs(layout)
    res = jobs["lora"].resources()
    assert (res["gpu"], res["mem_mb"], res["nodes"]) == (8, 960_000, 1)
    conv = conversion(layout, jobs)
    assert (conv.tp, conv.pp, conv.spec) == (4, 1, "te")
    assert generate_resources(layout, conv)["gpu"] == 8 and verify_resources(conv)["gpu"] == 1


def test_405b_pretraining_spans_nodes_with_one_srun_task_per_node(repo):
    job = train_jobs(_layout(repo, "configs/llama31_405b_pretrain.yaml"))["pretrain"]
    res = job.resources()
    assert (res["nodes"], res["gpu"], res["mpi"], res["tasks"], res["runtime"]) == (288, 2304, "srun", 288, 720)
    assert job.launcher().startswith("srun --nodes 288 --ntasks-per-node 1 ")


def test_a_conversion_layout_other_than_the_training_recipes_is_refused_by_key(repo):
    layout = _layout(repo, convert__tp=2)
    with pytest.raises(PipelineInputError, match=r"convert\.tp = 2 but train\.lora .* trains at tp 1"):
        conversion(layout, train_jobs(layout))


def test_packed_rows_of_another_length_than_the_recipes_sequence_are_named_by_key(repo):
    from workflow_scripts.dag.train_jobs import data_length_mismatches

    layout = _layout(repo, govreport__seq_length=1024, ultrachat__seq_length=100)
    found = data_length_mismatches(layout, train_jobs(layout))
    assert len(found) == 2
    assert re.match(r"govreport\.seq_length = 1024 but train\.lora .* sequences of 512", found[0])
    assert found[1].startswith("ultrachat.seq_length = 100 but train.sft")
    assert not data_length_mismatches(_layout(repo), train_jobs(_layout(repo)))


def test_submission_takes_the_mlperf_benchmark_workloads_only(repo):
    """The demo's LoRA (llama2_70b_lora) and pretraining (llama31_8b) runs go into the package; SFT is no MLPerf
    training benchmark. The flags carry the system description and every run, quoted."""
    layout = _layout(repo)
    benchmarks = {w: job.cfg.benchmark_name for w, job in train_jobs(layout).items()}
    runs = layout.submission_runs(benchmarks)
    assert runs == {"llama2_70b_lora": ["results/train/lora/seed1234"],
                    "llama31_8b": ["results/train/pretrain/seed1234"]}
    assert "results/train/lora/seed1234/mlperf_log.txt" in layout.submission_inputs(runs)
    flags = layout.submission_flags(runs)
    assert "--run llama2_70b_lora=results/train/lora/seed1234 llama31_8b=results/train/pretrain/seed1234" in flags
    assert "'{\"system_name\": \"CPU demo machine (2 vCPUs, no accelerator)\"" in flags
    assert layout.submission_folder() == "results/submission/mlperf-llm-pipeline"
    assert set(layout.submission_targets()) <= set(layout.targets())
    bad = _layout(repo, submission__ruleset="9.9.9")
    with pytest.raises(PipelineInputError, match="submission.ruleset: ruleset 9.9.9 is not supported"):
        bad.submission_runs(benchmarks)
