"""Checkpoint resharding (issue 18, item 4) on CPU with gloo: a run saved at one TP/PP/DP layout and killed resumes at
another and continues with the losses, gradient norms and evaluations of an uninterrupted run at the new layout.

Every comparison is against a run at the *new* layout started from the same converted model (random init differs
between layouts). Tolerance 1e-5 absolute on losses (~7 here) and evaluations, 1e-4 relative on gradient norms: what
the TP 2 / PP 2 == TP 1 tests of test_train_pretrain / test_train_lora hold (float rounding of another reduction
order). Breaking the load once showed the margin: an optimizer re-initialised instead of loaded moved the step-4 loss
by 5.6e-3 (pretraining, TP 2 -> 1) and LoRA's fc1 B read without its [gate; up] split moved the step-3 loss by
1.9e-3, each ~200x the tolerance. Step 3's loss is computed before its update, so steps 4 and 5 see the moments.
"""
from __future__ import annotations

import csv

import pytest

from train_fixtures import SEQ, make_model, packed_rows, train_cli

LORA = "lora={rank: 8, alpha: 16, dropout: 0.0, targets: [linear_qkv, linear_proj, linear_fc1, linear_fc2]}"
LAYOUTS = {  # name -> (sets, processes)
    "tp1": ([], 1), "tp2": (["tensor_parallel=2"], 2), "tp2_sp": (["tensor_parallel=2", "sequence_parallel=true"], 2),
    "pp2": (["pipeline_parallel=2"], 2), "tp1_dp2": ([], 2)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("train_reshard")
    _, mcore = make_model(base)
    train = packed_rows(base / "train.npy", 32, seed=1)
    valid = packed_rows(base / "validation.npy", 8, seed=2)
    sets = [f"checkpoint={mcore}", f"train_data=[{train}]", f"validation_data={valid}", f"seq_length={SEQ}",
            "global_batch_size=4", "micro_batch_size=2", "max_steps=5", "eval_every_samples=8", "eval_skip=0",
            "target=0.0", "lr=1e-2", "checkpoint_every_steps=2", "sequence_parallel=false"]
    return base, sets


def _rows(run, name):
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(run / name))]


def _assert_same_run(one, two):
    for name in ("steps.csv", "eval.csv"):
        a_rows, b_rows = _rows(one, name), _rows(two, name)
        assert len(a_rows) == len(b_rows) > 0, (name, a_rows, b_rows)
        for a, b in zip(a_rows, b_rows):
            assert a["step"] == b["step"]
            for key, tol in (("loss", 1e-5), ("eval_loss", 1e-5)):
                if key in a:
                    assert abs(a[key] - b[key]) < tol, (name, key, a, b)
            if "grad_norm" in a:
                assert abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] < 1e-4, (name, a, b)


def _reshard(tmp_path, sets, old, new, recipe, extra=()):
    """Kill a run at layout `old` after step 3 (newest complete checkpoint: step 2), resume it at `new`; compare with
    an uninterrupted run at `new`; returns the resumed run's stderr."""
    (old_sets, old_n), (new_sets, new_n) = LAYOUTS[old], LAYOUTS[new]
    sets = [*sets, *extra]
    train_cli(tmp_path / "whole", tmp_path / "whole_c", *sets, *new_sets, nproc=new_n, recipe=recipe)
    killed = train_cli(tmp_path / "run", tmp_path / "ckpt", *sets, *old_sets, nproc=old_n, recipe=recipe,
                       env={"PIPELINE_TEST_KILL_AT_STEP": "3"}, check=False)
    assert killed.returncode != 0 and not (tmp_path / "run" / "metrics.json").exists()
    resumed = train_cli(tmp_path / "run", tmp_path / "ckpt", *sets, *new_sets, nproc=new_n, recipe=recipe)
    assert "resumed from" in resumed.stderr and "(step 2)" in resumed.stderr
    _assert_same_run(tmp_path / "whole", tmp_path / "run")
    return resumed.stderr


@pytest.mark.slow  # several processes (gloo)
@pytest.mark.parametrize("old,new,line", [
    ("tp2", "tp1", "from TP 2 PP 1 (DP 1, 2 processes) to TP 1 PP 1 (DP 1, 1 processes)"),
    ("tp1", "pp2", "from TP 1 PP 1 (DP 1, 1 processes) to TP 1 PP 2 (DP 1, 2 processes)"),
    ("tp1", "tp2_sp", "from TP 1 PP 1 (DP 1, 1 processes) to TP 2 PP 1 (DP 1, 2 processes)"),
], ids=["tp2_to_tp1", "pp1_to_pp2", "tp1_to_tp2_sequence_parallel"])
def test_reshard_pretraining_resumes_at_another_layout_with_its_losses(setup, tmp_path, old, new, line):
    """Full-model training: the model (dist checkpoint) and every parameter's Adam moments resharded."""
    _, sets = setup
    stderr = _reshard(tmp_path, sets, old, new, "demo_pretrain_cpu", extra=["warmup_steps=1"])
    assert f"resharding checkpoint step 2 {line}" in stderr and "next sample 8" in stderr


@pytest.mark.slow  # several processes (gloo)
@pytest.mark.parametrize("old,new", [("tp2", "tp1_dp2"), ("pp2", "tp2")], ids=["tp2_to_dp2", "pp2_to_tp2"])
def test_reshard_lora_resumes_at_another_layout_with_its_losses(setup, tmp_path, old, new):
    """LoRA on all four targets: sharded factors (column B with fc1's [gate; up] rows, row A), replicated ones, and
    their moments; TP 2 -> DP 2 also changes the data-parallel split of every global batch."""
    _, sets = setup
    stderr = _reshard(tmp_path, sets, old, new, "demo_lora_cpu", extra=[LORA])
    assert "resharding checkpoint step 2 from" in stderr


@pytest.mark.slow  # several trainer runs
def test_reshard_is_refused_when_a_key_other_than_the_layout_differs(setup, tmp_path):
    """Layout keys may change at a resume; any other key still refuses it, naming the key (and not the layout)."""
    _, sets = setup
    sets = [*sets, LORA, "max_steps=2"]
    train_cli(tmp_path / "first", tmp_path / "ckpt", *sets, *LAYOUTS["tp2"][0], "checkpoint_every_steps=1",
              nproc=2)  # leaves step 1, at TP 2
    refused = train_cli(tmp_path / "other", tmp_path / "ckpt", *sets, "micro_batch_size=1", check=False)  # at TP 1
    assert refused.returncode == 2, refused.stderr[-3000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "(config.micro_batch_size)" in last and "it would mix two runs" in last, last
    assert "tensor_parallel" not in last and "processes" not in last, last
    assert not (tmp_path / "other" / "metrics.json").exists()


def test_reshard_fingerprint_allows_only_layout_keys_to_differ(tmp_path):
    """check_resume returns the layout keys that differ (the checkpoint is resharded) and refuses any other key."""
    import json

    from workflow_scripts.core.errors import PipelineInputError
    from workflow_scripts.train.train_fingerprint import FILE, check_resume

    saved = {"config": {"tensor_parallel": 2, "pipeline_parallel": 1, "sequence_parallel": True, "lr": 1e-2},
             "processes": 2, "inputs": {}}
    step = tmp_path / "step_00000002"
    step.mkdir()
    (step / FILE).write_text(json.dumps(saved))
    moved = {"config": {**saved["config"], "tensor_parallel": 1, "pipeline_parallel": 2, "sequence_parallel": False},
             "processes": 4, "inputs": {}}
    assert check_resume(step, moved) == ["config.pipeline_parallel", "config.sequence_parallel",
                                         "config.tensor_parallel", "processes"]
    with pytest.raises(PipelineInputError, match=r"\(config\.lr\); it would mix two runs"):
        check_resume(step, {**moved, "config": {**moved["config"], "lr": 2e-2}})
