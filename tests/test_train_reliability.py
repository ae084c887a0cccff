"""A rerun never mixes two runs (checkpoint fingerprints), and a diverged run is aborted, never a result."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from train_fixtures import REPO, SEQ, make_model, packed_rows, train_cli
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.train.train_config import build_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("train_reliability")
    _, mcore = make_model(base)
    train = packed_rows(base / "train.npy", 24, seed=1)
    valid = packed_rows(base / "validation.npy", 7, seed=2)
    sets = [f"checkpoint={mcore}", f"train_data=[{train}]", f"validation_data={valid}", f"seq_length={SEQ}",
            "global_batch_size=4", "micro_batch_size=2", "max_steps=4", "eval_every_samples=8", "eval_skip=0",
            "target=0.0", "lr=1e-2", "checkpoint_every_steps=2"]
    return base, train, sets


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow  # several trainer runs: the full suite's
def test_a_checkpoint_of_other_settings_or_inputs_is_never_resumed(setup, tmp_path):
    base, train, sets = setup
    ckpt = tmp_path / "ckpt"
    train_cli(tmp_path / "first", ckpt, *sets)  # leaves a complete checkpoint at step 2
    assert (ckpt / "step_00000002" / "fingerprint.json").is_file()

    other_lr = train_cli(tmp_path / "other_lr", ckpt, *sets, "lr=2e-2", check=False)
    assert other_lr.returncode == 2, other_lr.stderr[-2000:]
    last = other_lr.stderr.strip().splitlines()[-1]
    assert "config.lr" in last and str(ckpt / "step_00000002") in last and f"remove {ckpt}" in last
    assert not (tmp_path / "other_lr" / "metrics.json").exists()

    changed = tmp_path / "train_changed.npy"
    rows = np.load(train, allow_pickle=True)
    rows[3]["input_ids"] = rows[3]["input_ids"][::-1].copy()  # same size, other content
    np.save(changed, rows, allow_pickle=True)
    other_data = train_cli(tmp_path / "other_data", ckpt, *[s for s in sets if not s.startswith("train_data")],
                           f"train_data=[{changed}]", check=False)
    assert other_data.returncode == 2 and f"inputs[{changed}]" in other_data.stderr

    logging_only = train_cli(tmp_path / "same", ckpt, *sets, "log_every_steps=2")  # cadence keys do not define a run
    assert "resumed from" in logging_only.stderr and "(step 2)" in logging_only.stderr


@pytest.mark.slow  # several trainer runs: the full suite's
def test_a_checkpoint_without_fingerprint_is_refused_by_name(setup, tmp_path):
    base, _, sets = setup
    ckpt = tmp_path / "ckpt"
    train_cli(tmp_path / "first", ckpt, *sets)
    (ckpt / "step_00000002" / "fingerprint.json").unlink()
    proc = train_cli(tmp_path / "again", ckpt, *sets, check=False)
    assert proc.returncode == 2 and "has no fingerprint.json" in proc.stderr.strip().splitlines()[-1]


def test_a_diverged_run_is_aborted_and_writes_no_nan(setup, tmp_path):
    base, _, sets = setup
    proc = train_cli(tmp_path / "nan", tmp_path / "nan_ckpt", *[s for s in sets if not s.startswith("lr=")],
                     "lr=1e30", "max_steps=6", check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "diverged at step" in proc.stderr
    metrics = _strict_json(tmp_path / "nan" / "metrics.json")
    assert metrics["status"] == "aborted" and metrics["diverged"]["step"] < 6
    stop = [json.loads(l.split(":::MLLOG ", 1)[1]) for l in (tmp_path / "nan" / "mlperf_log.txt").read_text().splitlines()
            if '"run_stop"' in l]
    assert [s["metadata"]["status"] for s in stop] == ["aborted"]
    assert "NaN" not in (tmp_path / "nan" / "mlperf_log.txt").read_text()


@pytest.mark.parametrize("key,value", [("lr", float("nan")), ("lr", -1e-4), ("lr", 0.0), ("clip_grad", float("inf"))])
def test_non_finite_or_negative_optimizer_settings_are_refused_by_key(key, value):
    with pytest.raises(PipelineInputError, match=key):
        build_config("demo_lora_cpu", {"checkpoint": "x", key: value})


@pytest.mark.parametrize("recipe,overrides,message", [
    ("demo_lora_cpu", {"lora": {"rank": 16, "alhpa": 32}}, r"unknown train config key\(s\) lora.\['alhpa'\]"),
    ("demo_lora_cpu", {"lora": {"rank": "sixteen"}}, "lora.rank: 'sixteen' is not a number"),
    ("demo_lora_cpu", {"lora": {"rank": True}}, "lora.rank: True is not a number"),
    ("demo_lora_cpu", {"lora": {"targets": "linear_qkv"}}, "lora.targets: 'linear_qkv' is not a list"),
    ("demo_pretrain_cpu", {"model_shape": {"hiden_size": 64}}, r"model_shape.\['hiden_size'\]"),
])
def test_unknown_or_mistyped_sub_keys_are_refused_by_name(recipe, overrides, message):
    """Sub-keys of `lora` and `model_shape` are checked where the config is built (snakemake -n builds it), not by a
    constructor after the model loaded."""
    with pytest.raises(PipelineInputError, match=message):
        build_config(recipe, {"checkpoint": "x", **overrides} if "lora" in recipe else overrides)


@pytest.mark.slow  # several trainer runs: the full suite's
def test_a_corrupt_newest_checkpoint_is_named_and_the_previous_one_resumed(setup, tmp_path):
    base, _, sets = setup
    six = [*sets, "max_steps=6"]
    train_cli(tmp_path / "whole", tmp_path / "whole_ckpt", *six)  # uninterrupted; leaves checkpoints at steps 2, 4
    ckpt = tmp_path / "whole_ckpt"
    newest = ckpt / "step_00000004" / "rank_0.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, still marked complete
    again = train_cli(tmp_path / "again", ckpt, *six)
    assert f"checkpoint {ckpt / 'step_00000004'} cannot be read" in again.stderr
    assert f"resumed from {ckpt / 'step_00000002'} (step 2)" in again.stderr
    losses = [line.split(",")[2] for line in (tmp_path / "again" / "steps.csv").read_text().splitlines()[1:]]
    assert losses == [line.split(",")[2] for line in (tmp_path / "whole" / "steps.csv").read_text().splitlines()[1:]]

    (ckpt / "step_00000002" / "rank_0.pt").write_bytes(b"")  # now no readable complete checkpoint is left
    (ckpt / "step_00000004" / "rank_0.pt").write_bytes(b"")
    none_left = train_cli(tmp_path / "none", ckpt, *six, check=False)
    assert none_left.returncode == 2 and "no complete checkpoint in" in none_left.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # several trainer runs: the full suite's
@pytest.mark.parametrize("fault,message", [
    ("full-disk", "No space left on device: '{folder}/__0_"),
    ("killed", "checkpoint writer process "),  # the OOM killer's way: the writer reports nothing
])
def test_a_failing_checkpoint_writer_process_fails_the_run_and_marks_nothing_complete(setup, tmp_path, fault,
                                                                                       message):
    """Full-model training saves through megatron's dist_checkpointing, whose forked writer processes write the
    .distcp files: their error fails the trainer with the file named, a killed writer (which megatron would wait for
    forever) fails it as well; no checkpoint is marked complete, no result written."""
    base, train, _ = setup
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "workers" / "train_failing_writer.py"), fault, "--recipe",
           "demo_base_cpu", "--out", str(out), "--ckpt-dir", str(ckpt), "--set", f"train_data=[{train}]",
           f"validation_data={base / 'validation.npy'}", f"seq_length={SEQ}", "max_steps=4", "checkpoint_every_steps=2",
           "eval_samples=4"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    folder = ckpt / "step_00000002" / "model"
    assert f"CheckpointWriteError: {folder}: checkpoint not saved (" in last, last
    assert message.format(folder=folder) in last, last
    if fault == "killed":
        assert last.endswith(" was killed by SIGKILL)"), last
    assert not list(ckpt.glob("step_*/complete")) and not (out / "metrics.json").exists()
    assert not (out / "checkpoint").exists()


def test_the_checkpoint_writer_helper_dies_with_a_killed_trainer(repo):
    """megatron's writer helper (a spawned manager, train_checkpoint.spawn_writer_helper_ignoring) outlived a trainer
    killed outright and held its stdout and stderr open: whatever waited for them (a test, a job step) hung."""
    code = """
import multiprocessing as mp, os, signal
from workflow_scripts.train import train_checkpoint
train_checkpoint.spawn_writer_helper_ignoring((signal.SIGTERM, signal.SIGUSR1))
[helper] = mp.active_children()
print(helper.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)),
                          capture_output=True, text=True, timeout=120)  # a surviving helper: a timeout here
    assert proc.returncode == -9 and proc.stdout.strip().isdigit(), proc.stderr[-2000:]
