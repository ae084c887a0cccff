"""Config validation before any rule, `--lint`, and planning at full C4 scale without data."""
from __future__ import annotations

import re

import pytest
import yaml

from conftest import NOT_DATA, copy_workflow, run_snakemake
from workflow_scripts.core.config_check import validate_config
from workflow_scripts.core.errors import PipelineInputError


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def _config(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_default_config_is_valid_and_fully_commented(repo):
    config = _config(repo)
    validate_config(config, repo / "schemas/config.schema.yaml")
    # Every key has a comment: directly above it, or above the run of sibling keys it belongs to.
    lines = (repo / "config.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^\s*\w+:", line):
            continue
        indent = len(line) - len(line.lstrip())
        j = i - 1
        while j >= 0 and re.match(r"^\s*\w+:", lines[j]) and len(lines[j]) - len(lines[j].lstrip()) == indent:
            j -= 1
        assert j >= 0 and lines[j].strip().startswith("#"), f"config.yaml key without a comment: {line.strip()}"


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: c["c4"].update(train_groupz=8), "unknown config key c4.train_groupz"),
        (lambda c: c["c4"].update(train_groups="8"), "config key c4.train_groups: '8' is not of type 'integer'"),
        (lambda c: c.update(extra={}), "unknown config key extra"),
        (lambda c: c["c4"].pop("tokenizer"), "config c4: 'tokenizer' is a required property"),
        (lambda c: c["inference"].update(kv_cache="fp16"), "config key inference.kv_cache: 'fp16' is not one of"),
    ],
)
def test_schema_errors_name_the_key(repo, mutate, message):
    config = _config(repo)
    mutate(config)
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        validate_config(config, repo / "schemas/config.schema.yaml")


def _override(tmp_path, c4: dict):
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump({"c4": c4}))
    return str(path)


def test_snakemake_stops_before_any_rule_on_bad_config(workflow_copy, tmp_path):
    override = _override(tmp_path, {"train_shards": 1024, "train_groups": 7})
    proc = run_snakemake(workflow_copy, "-n", "--configfile", override, check=False)
    assert proc.returncode != 0
    assert "c4.train_shards (1024) is not divisible by c4.train_groups (7)" in proc.stderr + proc.stdout
    proc = run_snakemake(workflow_copy, "-n", "--configfile", _override(tmp_path, {"validation_docs": "many"}), check=False)
    assert "config key c4.validation_docs: 'many' is not of type 'integer'" in proc.stderr + proc.stdout


@pytest.mark.parametrize("train,message", [
    ({"lora": {"recipe": "demo_lora_cpu", "seeds": [1234], "overrides": {"learning_rate": 1.0}}},
     "train.lora (recipe 'demo_lora_cpu', seed 1234): unknown train config key(s) ['learning_rate']"),
    # one Snakemake planning run each: the first case stays in the fast tier, the others are the full suite's
    pytest.param({"lora": {"recipe": "llama3_lora_cpu", "seeds": [1234]}}, "unknown recipe 'llama3_lora_cpu'",
                 marks=pytest.mark.slow),
    pytest.param({"lora": {"recipe": "demo_lora_cpu", "seeds": [1234], "overrides": {"lr": -1.0}}},
                 "lr must be a finite number > 0, got -1.0", marks=pytest.mark.slow),
    pytest.param({"pretrain": {"recipe": "demo_pretrain_cpu", "seeds": [1234],
                               "blend": ["c4-train.en_6", "c4-train.en_7"], "weights": [100]}},
                 "train_weights must have one weight per train_data entry", marks=pytest.mark.slow),
    pytest.param({"lora": {"recipe": "demo_lora_cpu", "seeds": [1234], "overrides": {"tensor_parallel": 2}}},
                 "tensor_parallel x pipeline_parallel = 2 x 1 does not divide the 1 processes", marks=pytest.mark.slow),
])
def test_dry_run_refuses_training_configs_the_job_would_refuse(workflow_copy, tmp_path, train, message):
    override = tmp_path / "train.yaml"
    override.write_text(yaml.safe_dump({"train": train}))
    proc = run_snakemake(workflow_copy, "-n", "--configfile", str(override), check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


def test_lint_is_clean(workflow_copy):
    proc = run_snakemake(workflow_copy, "--lint", check=False)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def _placeholder_c4(root, train=1024, validation=8):
    raw = root / "c4"
    raw.mkdir()
    for i in range(train):
        (raw / f"c4-train.{i:05d}-of-{train:05d}.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    for i in range(validation):
        (raw / f"c4-validation.{i:05d}-of-{validation:05d}.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    tok = root / "mixtral"
    tok.mkdir()
    (tok / "tokenizer.json").write_bytes(NOT_DATA)
    return raw, tok


def test_full_scale_dry_run_plans_without_reading_data(workflow_copy, tmp_path):
    raw, tok = _placeholder_c4(tmp_path)
    proc = run_snakemake(
        workflow_copy, "-n", "c4_data", "--configfile", "configs/llama31_405b_c4.yaml",
        _override(tmp_path, {"raw_dir": str(raw), "tokenizer": str(tok)}),
    )
    out = proc.stdout
    counts = dict(re.findall(r"^(c4_\w+)\s+(\d+)$", out, flags=re.M))
    assert counts == {"c4_consolidate_train": "8", "c4_consolidate_validation": "1", "c4_tokenize": "9", "c4_data": "1"}, out[-2000:]
    assert "c4-validation-91205-samples.en_text_document.bin" in out
    assert f"{raw}/c4-train.00896-of-01024.json.gz" in out and "demo_c4_corpus" not in out


def test_full_scale_plan_refuses_missing_and_extra_shards(workflow_copy, tmp_path):
    raw, tok = _placeholder_c4(tmp_path)
    (raw / "c4-train.00500-of-01024.json.gz").unlink()
    (raw / "c4-train.00000-of-00512.json.gz").touch()
    proc = run_snakemake(
        workflow_copy, "-n", "--configfile", "configs/llama31_405b_c4.yaml",
        _override(tmp_path, {"raw_dir": str(raw), "tokenizer": str(tok)}), check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "c4-train.00500-of-01024.json.gz" in text and "c4-train.00000-of-00512.json.gz" in text
