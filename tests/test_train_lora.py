"""The LoRA trainer on a tiny converted model: exact resume, signals, HF parity of the start loss and the eval metric,
TP 2 equal to TP 1."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from train_fixtures import REPO, SEQ, make_model, packed_rows, train_cli
from workflow_scripts.train.train_data import sample_order


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("train_lora")
    hf, mcore = make_model(base)
    train = packed_rows(base / "train.npy", 24, seed=1)
    valid = packed_rows(base / "validation.npy", 7, seed=2)
    sets = [f"checkpoint={mcore}", f"train_data=[{train}]", f"validation_data={valid}", f"seq_length={SEQ}",
            "global_batch_size=4", "micro_batch_size=2", "max_steps=6", "eval_every_samples=8", "eval_skip=0",
            "target=0.0", "lr=1e-2", "checkpoint_every_steps=2"]
    return base, hf, mcore, train, valid, sets


def _losses(run_dir):
    return [float(r["loss"]) for r in csv.DictReader(open(run_dir / "steps.csv"))]


@pytest.fixture(scope="module")
def uninterrupted(setup):
    base, *_, sets = setup
    train_cli(base / "a", base / "a_ckpt", *sets)
    return base / "a"


def test_outputs_and_protocol(uninterrupted):
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["samples"] == 24 and metrics["status"] == "aborted"  # target 0 unreachable
    assert metrics["parallel"] == {"tensor": 1, "pipeline": 1, "data": 1, "optimizer": "torch"}  # CPU: torch AdamW
    assert [e["samples_count"] for e in metrics["evals"]] == [8, 16, 24]  # every 8 samples, none skipped
    assert (uninterrupted / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((uninterrupted / "resolved_config.json").read_text())
    assert config["lora"]["rank"] == 16 and config["lora"]["alpha"] == 32 and config["clip_grad"] == 0.3
    losses = _losses(uninterrupted)
    assert len(losses) == 6 and all(np.isfinite(losses))
    log = (uninterrupted / "mlperf_log.txt").read_text()
    assert log.count('"key": "run_start"') == 1 and log.count('"key": "eval_accuracy"') == 3


def test_killed_run_resumes_exactly(setup, uninterrupted):
    base, *_, sets = setup
    proc = train_cli(base / "b", base / "b_ckpt", *sets, env={"PIPELINE_TEST_KILL_AT_STEP": "3"}, check=False)
    assert proc.returncode != 0  # SIGKILL after step 3; the newest complete checkpoint is step 2
    assert not (base / "b" / "metrics.json").exists()
    train_cli(base / "b", base / "b_ckpt", *sets)
    assert _losses(base / "b") == _losses(uninterrupted)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, base / "b"))
    assert [e["eval_loss"] for e in a["evals"]] == [e["eval_loss"] for e in b["evals"]]
    log = (base / "b" / "mlperf_log.txt").read_text()
    assert log.count('"key": "run_start"') == 1 and log.count('"key": "eval_accuracy"') == 3


def test_sigterm_saves_and_exits_75(setup, tmp_path):
    *_, sets = setup
    cmd = [sys.executable, "-m", "workflow_scripts.train", "--recipe", "demo_lora_cpu", "--out", str(tmp_path / "o"),
           "--ckpt-dir", str(tmp_path / "c"), "--set", *[s for s in sets if not s.startswith("max_steps")],
           "max_steps=400", "checkpoint_every_steps=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    steps = tmp_path / "c" / "live" / "steps.csv"
    deadline = time.time() + 300
    while time.time() < deadline and (not steps.exists() or len(steps.read_text().splitlines()) < 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 75, proc.stderr.read()[-3000:]
    saved = sorted((tmp_path / "c").glob("step_*"))
    assert saved and (saved[-1] / "complete").is_file()


def _hf_row_losses(hf_dir, ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="eager").eval()
    tokens = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        logits = model(input_ids=tokens[:, :-1]).logits
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return losses, torch.from_numpy(mask[:, 1:].astype(np.float64)).float()


def test_first_step_loss_is_the_hf_models_loss(setup, uninterrupted):
    base, hf, _, train, *_ = setup
    rows = np.load(train, allow_pickle=True)
    ids = np.stack([r["input_ids"] for r in rows])
    mask = np.stack([r["loss_mask"] for r in rows])
    order = sample_order(len(rows), 1234, 0, 4)  # step 0's samples (two micro-batches of two)
    losses, m = _hf_row_losses(hf, ids[order], mask[order])
    # the reference's loss: one row per micro-batch, each row's mean over its answer tokens, averaged over the batch
    total = float(((losses * m).sum(1) / m.sum(1).clamp(min=1)).mean())
    assert abs(_losses(uninterrupted)[0] - total) < 1e-4


@pytest.mark.slow  # several trainer runs: the full suite's
def test_micro_batch_size_does_not_change_the_lora_losses(setup, tmp_path):
    """The LoRA loss is the mean of per-row means whatever rows a micro-batch holds (GBS 4 as 4 x 1 or 1 x 4)."""
    base, *_, sets = setup
    sets = [s for s in sets if not s.startswith("micro_batch_size")] + [
        "max_steps=3", "lora={rank: 16, alpha: 32, dropout: 0.0, targets: [linear_qkv, linear_proj]}"]
    train_cli(tmp_path / "one", tmp_path / "one_c", *sets, "micro_batch_size=1")
    train_cli(tmp_path / "four", tmp_path / "four_c", *sets, "micro_batch_size=4")
    one, four = _losses(tmp_path / "one"), _losses(tmp_path / "four")
    assert len(one) == 3 and max(abs(a - b) for a, b in zip(one, four)) < 1e-5, (one, four)


def test_eval_metric_equals_transformers_on_the_merged_model(setup, uninterrupted, tmp_path):
    from workflow_scripts.convert.conversion import mcore_to_hf

    _, _, mcore, _, valid, _ = setup
    merged = mcore_to_hf(mcore, tmp_path / "merged", lora_dir=uninterrupted / "adapter")
    rows = np.load(valid, allow_pickle=True)
    losses, m = _hf_row_losses(merged, np.stack([r["input_ids"] for r in rows]), np.stack([r["loss_mask"] for r in rows]))
    keep = m.sum(1) > 0  # the last row has no answer tokens and does not count
    expected = float(((losses * m).sum(1)[keep] / m.sum(1)[keep]).mean())
    final = json.loads((uninterrupted / "metrics.json").read_text())["final_quality"]
    assert abs(final - expected) < 1e-4


@pytest.mark.slow  # several processes (gloo)
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp2", "tp2_sequence_parallel"])
def test_tp2_gives_the_tp1_losses(setup, tmp_path, sequence_parallel):
    """All four LoRA targets (both parallel kinds, replicated factors whose gradients SP leaves partial); clipping
    active (clip 0.3, grad norms above it) so a wrong gradient norm shows too."""
    base, *_, sets = setup
    sets = [*sets, "lora={rank: 16, alpha: 32, dropout: 0.0, targets: [linear_qkv, linear_proj, linear_fc1, linear_fc2]}",
            "max_steps=3"]
    train_cli(tmp_path / "tp1", tmp_path / "tp1c", *sets)
    train_cli(tmp_path / "tp2", tmp_path / "tp2c", *sets, "tensor_parallel=2", f"sequence_parallel={sequence_parallel}",
              nproc=2)
    one, two = _losses(tmp_path / "tp1"), _losses(tmp_path / "tp2")
    assert len(one) == 3 and max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
    resolved = json.loads((tmp_path / "tp2" / "resolved_config.json").read_text())
    assert resolved["sequence_parallel"] is sequence_parallel
    norms = [[float(r["grad_norm"]) for r in csv.DictReader(open(tmp_path / run / "steps.csv"))] for run in ("tp1", "tp2")]
    assert max(abs(a - b) / a for a, b in zip(*norms)) < 1e-4, norms


@pytest.mark.slow  # several processes (gloo)
def test_pp2_with_a_resume_gives_the_pp1_losses_and_adapter(setup, tmp_path):
    """Two pipeline stages (one layer each) through megatron's 1F1B schedule, killed after step 3 and resumed from
    the step-2 checkpoint: the same losses, gradient norms, evaluations and adapter as one process."""
    from safetensors.torch import load_file

    base, *_, sets = setup
    sets = [*sets, "lora={rank: 16, alpha: 32, dropout: 0.0, targets: [linear_qkv, linear_proj, linear_fc1, linear_fc2]}",
            "max_steps=4"]
    train_cli(tmp_path / "pp1", tmp_path / "pp1c", *sets)
    killed = train_cli(tmp_path / "pp2", tmp_path / "pp2c", *sets, "pipeline_parallel=2", nproc=2,
                       env={"PIPELINE_TEST_KILL_AT_STEP": "3"}, check=False)
    assert killed.returncode != 0 and not (tmp_path / "pp2" / "metrics.json").exists()
    resumed = train_cli(tmp_path / "pp2", tmp_path / "pp2c", *sets, "pipeline_parallel=2", nproc=2)
    assert "resumed from" in resumed.stderr and "(step 2)" in resumed.stderr

    def rows(run, name):
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(tmp_path / run / name))]

    for name in ("steps.csv", "eval.csv"):
        one, two = rows("pp1", name), rows("pp2", name)
        assert len(one) == len(two) > 0
        for a, b in zip(one, two):
            for key in ("loss", "grad_norm", "eval_loss"):
                if key in a:
                    assert abs(a[key] - b[key]) < 1e-5, (name, key, a, b)
    one, two = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("pp1", "pp2"))
    assert one.keys() == two.keys() and len(one) == 16  # 2 layers x 4 targets x (A, B): both stages' layers
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-6


@pytest.mark.parametrize("bad,message", [
    ("tensor_parallel=2", "tensor_parallel x pipeline_parallel = 2 x 1 does not divide the 1 launched processes"),
    ("checkpoint=/nonexistent/ckpt", "checkpoint /nonexistent/ckpt is missing or not a converted checkpoint"),
    ("optimizer_impl=megatron", "optimizer_impl megatron needs CUDA"),
    ("optimizer_impl=adafactor", "optimizer_impl must be 'auto', 'megatron' or 'torch', got 'adafactor'"),
    ("global_batch_size=5", "global_batch_size 5 is not a multiple of micro_batch_size 2"),
    ("cuda_graphs=true", "cuda_graphs needs CUDA, spec te (not local)"),
    ("te_op_fuser=true", "te_op_fuser needs spec te, got 'local'"),
    ("spec=te te_op_fuser=true lora={targets: [linear_qkv, linear_fc1]}",
     "te_op_fuser fuses the MLP's linears, which LoRA targets here (lora.targets)"),
])
def test_bad_config_fails_before_any_compute_naming_the_key(setup, tmp_path, capsys, bad, message):
    from workflow_scripts.train.trainer import main

    *_, sets = setup
    if bad.startswith(("optimizer_impl=megatron", "cuda_graphs")) and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code = main(["--recipe", "demo_lora_cpu", "--out", str(tmp_path / "o"), "--ckpt-dir", str(tmp_path / "c"),
                 "--set", *sets, *bad.split(" ", 2)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1], err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_sequence_longer_than_the_rows_fails_naming_the_file(setup, tmp_path):
    base, *_, sets = setup
    proc = train_cli(tmp_path / "o", tmp_path / "c", *sets, "seq_length=100", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{base / 'train.npy'}: rows hold {SEQ} tokens, train config seq_length is 100" in proc.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_every_step_tells_the_model_a_step_starts(setup, tmp_path, monkeypatch):
    """TE caches the fp8 copies of weights after a step's first micro-batch (megatron's `set_is_first_microbatch`
    resets the cache; its schedules call it, the trainer's own PP-1 loop must too): one call per optimizer step,
    before that step's first forward."""
    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
    from workflow_scripts.train.trainer import Trainer, build_config

    base, hf, mcore, train, valid, _ = setup
    cfg = build_config("demo_lora_cpu", {"checkpoint": str(mcore), "train_data": [str(train)],
                                         "validation_data": str(valid), "seq_length": SEQ, "global_batch_size": 4,
                                         "micro_batch_size": 2, "max_steps": 2})
    init_parallel(1, 1, seed=cfg.seed)
    try:
        trainer = Trainer(cfg, tmp_path / "out", tmp_path / "ckpt")
        events: list[str] = []
        model = trainer.model
        monkeypatch.setattr(model, "set_is_first_microbatch", lambda: events.append("step"))
        model.register_forward_pre_hook(lambda *_: events.append("forward"))
        trainer.train_step(0)
        trainer.train_step(1)
    finally:
        shutdown_parallel()
    assert events == ["step", "forward", "forward"] * 2
