"""Dry-run planning of the real-scale workload configs (profiles/slurm, placeholder inputs, no Slurm, no data):
every job with its partition, nodes x GPUs and walltime, and training GPU-hours equal to a hand computation."""
from __future__ import annotations

import math

import pytest
import yaml

from conftest import NOT_DATA, copy_workflow
from workflow_scripts.plan import planner as plan
from workflow_scripts.core.config_check import validate_config

MFU, PEAK = 0.4, 989.0  # config.yaml plan: defaults, asserted below


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf_plan"))


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _rows(rows, rule):
    return [r for r in rows if r["rule"] == rule]


def test_real_scale_configs_validate_and_plan_defaults(repo):
    base = yaml.safe_load((repo / "config.yaml").read_text())
    assert base["plan"] == {"mfu": MFU, "peak_tflops": PEAK, "tokens": "rcp"}
    for name in ("llama2_70b_lora_8xh100.yaml", "llama31_405b_pretrain.yaml", "llama31_405b_c4.yaml",
                 "llama31_8b_pretrain.yaml"):
        config = plan.load_config(repo, [f"configs/{name}"])
        validate_config(config, repo / "schemas/config.schema.yaml")


def test_lora_plan_matches_hand_computation(workflow_copy, tmp_path):
    hf = tmp_path / "Llama-2-70b-hf"  # placeholder: nothing in it is read, so the Llama-2-70B shape is assumed
    hf.mkdir()
    (hf / "config.json").touch()
    override = _write(tmp_path / "site.yaml", {"convert": {"hf_checkpoint": str(hf)}})
    table, rows, totals = plan.make_plan(workflow_copy, ["configs/llama2_70b_lora_8xh100.yaml", override],
                                         "profiles/slurm")

    train = _rows(rows, "train_lora")
    assert [r["wildcards"] for r in train] == [f"seed={s}" for s in range(1, 11)]
    assert {(r["partition"], r["nodes"], r["gpus_per_node"], r["runtime_min"]) for r in train} == {("h100", 1, 8, 240)}
    assert [(r["partition"], r["gpus_per_node"]) for r in _rows(rows, "verify_conversion")] == [("h100", 1)]
    assert [r["partition"] for r in _rows(rows, "govreport_npy")] == ["cpu", "cpu"]
    assert len(_rows(rows, "govreport_hub")) == 2 and len(_rows(rows, "convert_hf_to_mcore")) == 1

    # Llama-2-70B: 80 layers of q, o (8192^2), k, v (8192 x 1024), gate/up/down (8192 x 28672), two norms; untied
    # 32000-row embedding and output; final norm. Tokens: RCP mean 3187.2 samples at GBS 8 x 8192 tokens.
    params = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192) + 2 * 32000 * 8192 + 8192
    assert params == 68_976_648_192
    hand = 6 * params * (3187.2 * 8192) / (MFU * PEAK * 1e12) / 3600
    for r in train:
        est = r["estimate"]
        assert (est.params, est.shape_from, est.samples_from) == (params, "Llama-2-70B", "RCP mean")
        assert est.gpu_hours == pytest.approx(hand, rel=1e-12)
        assert r["wall_hours"] == pytest.approx(hand / 8, rel=1e-12)
    assert hand == pytest.approx(7.59, abs=0.01)
    lora_total = sum(r["estimate"].gpu_hours for r in train)
    assert lora_total == pytest.approx(10 * hand, rel=1e-12)
    assert totals["train_gpu_hours"] >= lora_total  # + the demo pretrain/SFT runs the default target still holds
    assert f"| train_lora | 10 | h100 | 1 x 8 | 4:00 | {10 * hand:,.1f} |" in table
    assert "DAG total: " in table


def test_pretrain_plan_matches_hand_computation(workflow_copy, tmp_path):
    raw = tmp_path / "c4"
    raw.mkdir()
    for i in range(1024):
        (raw / f"c4-train.{i:05d}-of-01024.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    for i in range(8):
        (raw / f"c4-validation.{i:05d}-of-00008.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    tok = tmp_path / "mixtral"
    tok.mkdir()
    (tok / "tokenizer.json").write_bytes(NOT_DATA)
    container = "--container-image=/images/llm.sqsh --container-mounts=/lustre:/lustre"
    override = _write(tmp_path / "site.yaml", {"c4": {"raw_dir": str(raw), "tokenizer": str(tok)},
                                               "train": {"pretrain": {"srun_extra": container}}})
    table, rows, totals = plan.make_plan(workflow_copy, ["configs/llama31_405b_pretrain.yaml", override],
                                         "profiles/slurm", targets=["results/train/pretrain/seed1/metrics.json",
                                                                    "results/train/pretrain/seed2/metrics.json",
                                                                    "results/train/pretrain/seed3/metrics.json"])

    counts = {rule: len(group) for rule, group in plan._by_rule(rows).items()}
    # Training needs only the blended groups (en_6, en_7: 2 x 128 raw shards) and the 91205-document validation set.
    assert counts == {"c4_consolidate_train": 2, "c4_consolidate_validation": 1, "c4_tokenize": 3,
                      "pretrain_index_cache": 1, "train_pretrain": 3}, counts
    assert sorted(r["wildcards"] for r in _rows(rows, "c4_tokenize")) == [
        "c4_name=c4-train.en_6", "c4_name=c4-train.en_7", "c4_name=c4-validation-91205-samples.en"]
    assert {r["partition"] for r in rows if r["rule"] != "train_pretrain"} == {"cpu"}
    train = _rows(rows, "train_pretrain")
    assert {(r["partition"], r["nodes"], r["gpus_per_node"], r["runtime_min"]) for r in train} == {("h100", 288, 8, 720)}
    # One torchrun per node through the rule's own srun (with the site's container options), c10d on the first node.
    launch = (f"srun --nodes 288 --ntasks-per-node 1 {container} sh -c 'trap \"\" USR1; exec \"$@\"' sh torchrun "
              "--nnodes 288 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint "
              "$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):29500 --rdzv-id $SLURM_JOB_ID "
              "-m workflow_scripts.train --recipe llama31_405b_pretrain_2304xh100_bf16")
    assert all(r["shell"].startswith(launch) for r in train), train[0]["shell"]

    # 405B with the Mixtral vocabulary: 126 layers of q, o (16384^2), k, v (16384 x 8 groups x 128), gate/up/down
    # (16384 x 53248), two norms; untied 32768-row embedding and output; final norm. Tokens: RCP mean 313,344 samples
    # at GBS 1152 x 8192 tokens.
    params = 126 * (2 * 16384 * 16384 + 2 * 16384 * 1024 + 3 * 16384 * 53248 + 2 * 16384) + 2 * 32768 * 16384 + 16384
    assert params == 402_724_438_016
    hand = 6 * params * (313_344 * 8192) / (MFU * PEAK * 1e12) / 3600
    assert hand == pytest.approx(4355.3, abs=0.1)
    for r in train:
        est = r["estimate"]
        assert (est.recipe, est.params, est.shape_from, est.samples) == (
            "llama31_405b_pretrain_2304xh100_bf16", params, "recipe", 313_344)
        assert est.gpu_hours == pytest.approx(hand, rel=1e-12)
        assert r["wall_hours"] == pytest.approx(hand / 2304, rel=1e-12)
    assert totals["train_gpu_hours"] == pytest.approx(3 * hand, rel=1e-12)
    assert f"training {3 * hand:,.1f} GPU-h estimated" in table
    pieces = math.ceil(hand / 2304 * 60 / 720)
    assert f"| {hand:,.1f} | {hand / 2304:,.2f} | {pieces} |" in table


def test_max_steps_basis_and_cli(workflow_copy, tmp_path, capsys):
    """The upper bound (max_steps x GBS) from a saved dry-run output through the CLI; the table is written atomically."""
    text = (
        "rule train_pretrain:\n    wildcards: seed=1\n"
        "    resources: tmpdir=/tmp, mem_mb=960000, slurm_partition=h100, runtime=720, nodes=288, mpi=srun, "
        "gres=gpu:h100:8, slurm_extra=--signal=USR1@600\n"
        "Shell command: srun --nodes 288 torchrun -m workflow_scripts.train --recipe llama31_405b_pretrain_2304xh100_bf16"
        " --overrides-inline '{seed: 1}' --out x > log 2>&1\n\nrule all:\n    jobid: 0\nShell command: None\n"
    )
    saved = tmp_path / "dryrun.txt"
    saved.write_text(text)
    basis = _write(tmp_path / "basis.yaml", {"plan": {"tokens": "max_steps", "mfu": 0.5}})
    out = tmp_path / "plan.md"
    assert plan.main(["--workdir", str(workflow_copy), "--dry-run-output", str(saved), "--out", str(out),
                      "--configfile", "configs/llama31_405b_pretrain.yaml", basis]) == 0
    params = 402_724_438_016
    hand = 6 * params * (1_200_000 * 1152 * 8192) / (0.5 * PEAK * 1e12) / 3600  # max_steps ceil(1.2M x 1152 / GBS)
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert "| train_pretrain | seed=1 | h100 | 288 x 8 | 12:00 |" in printed
    assert f"{hand:,.1f}" in printed and "(max_steps)" in printed
    assert "| all | - | local | 1 x 0 | - |" in printed
    # A bad plan key stops with the key's name (exit 2).
    bad = _write(tmp_path / "bad.yaml", {"plan": {"mfu": 2}})
    assert plan.main(["--workdir", str(workflow_copy), "--dry-run-output", str(saved), "--configfile", bad]) == 2
    assert "plan.mfu" in capsys.readouterr().err


def test_8b_pretrain_plan_matches_hand_computation(workflow_copy, tmp_path):
    """configs/llama31_8b_pretrain.yaml: one node of 8 GPUs per run, 10 runs, and each run's GPU-hours from the 8B
    shape and the llama31_8b RCP mean at GBS 32 (179,404.8 samples of 8,192 tokens)."""
    raw = tmp_path / "c4"
    raw.mkdir()
    for i in range(1024):
        (raw / f"c4-train.{i:05d}-of-01024.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    for i in range(8):
        (raw / f"c4-validation.{i:05d}-of-00008.json.gz").write_bytes(NOT_DATA)
    (tmp_path / "tokenizer.json").write_bytes(NOT_DATA)
    override = _write(tmp_path / "site.yaml", {"c4": {"raw_dir": str(raw), "tokenizer": str(tmp_path / "tokenizer.json")}})
    table, rows, totals = plan.make_plan(workflow_copy, ["configs/llama31_8b_pretrain.yaml", override], "profiles/slurm",
                                         targets=[f"results/train/pretrain/seed{s}/metrics.json" for s in range(1, 11)])
    train = _rows(rows, "train_pretrain")
    assert len(train) == 10
    assert {(r["partition"], r["nodes"], r["gpus_per_node"]) for r in train} == {("h100", 1, 8)}
    # 32 layers of q, o (4096^2), k, v (4096 x 8 groups x 128), gate/up/down (4096 x 14336), two norms; untied
    # 128,256-row embedding and output; final norm.
    params = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 2 * 128256 * 4096 + 4096
    assert params == 8_030_261_248
    hand = 6 * params * (179_404.8 * 8192) / (MFU * PEAK * 1e12) / 3600
    for r in train:
        est = r["estimate"]
        assert (est.recipe, est.params, est.shape_from, est.samples_from) == (
            "llama31_8b_pretrain_8xh100_bf16", params, "recipe", "RCP mean")
        assert est.gpu_hours == pytest.approx(hand, rel=1e-9)
    assert totals["train_gpu_hours"] == pytest.approx(10 * hand, rel=1e-9)


def test_generation_projection_for_the_70b_accuracy_run():
    """The accuracy-run projection (README and every plan): its KV-cache and batch facts, and a hand computation of
    one roofline; the 70B run on 8 GPUs stays far below the reference's ~4.5 days."""
    from workflow_scripts.plan import generation_estimate as E

    assert E.kv_bytes_per_token(E.LLAMA2_70B) == 80 * 2 * 8 * 128 * 2
    assert E.auto_rows(E.LLAMA2_70B, E.H100, 8) == 256  # capped: an 80 GB GPU holds 17 GB of weights at TP 8
    n = E.params(E.LLAMA2_70B)
    assert 68.9e9 < n < 69.1e9
    gpu, rows = E.H200, E.auto_rows(E.LLAMA2_70B, E.H200, 8)
    live = rows * E.OCCUPANCY
    prefill = E.SAMPLES * E.MEAN_PROMPT_TOKENS * 2 * n / (8 * gpu.gemm_tflops * 1e12)
    step = (2 * n + live * (E.MEAN_PROMPT_TOKENS + E.MEAN_NEW_TOKENS / 2) * 327680) / 8 / (gpu.hbm_tb_s * 1e12)
    step += 2 * 80 * E.ALLREDUCE_S
    hand = (prefill + E.SAMPLES * E.MEAN_NEW_TOKENS / live * step) / 3600
    assert abs(E.roofline_hours(E.LLAMA2_70B, gpu, 8) - hand) < 1e-9
    assert E.projected_hours(E.LLAMA2_70B, gpu, 8) == pytest.approx(hand / E.MEASURED_ROOFLINE_FRACTION)
    assert E.projected_hours(E.LLAMA2_70B, E.H100, 8) < 24


def test_plan_and_readme_state_the_generation_projection(repo):
    from workflow_scripts.plan.generation_estimate import projection_lines
    from workflow_scripts.plan.planner import render_markdown

    table = projection_lines()[2:]
    assert "\n".join(table) in render_markdown([], {"jobs": 0, "train_gpu_hours": 0.0, "gpu_alloc_hours": 0.0},
                                               {"plan": {"mfu": 0.4, "peak_tflops": 989.0, "tokens": "rcp"}})
    readme = (repo / "README.md").read_text()
    assert all(line in readme for line in table)
