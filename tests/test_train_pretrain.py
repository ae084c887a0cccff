"""Pretraining reads the project's own .bin/.idx through megatron-core's GPTDataset, with the index cache built
beforehand by the CPU entry point, and the loss goes down."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from distributed import free_port
from train_fixtures import REPO, make_model
from workflow_scripts.data.c4_consolidate import concatenate
from workflow_scripts.data.c4_tokenize import tokenize_file

SHAPE = ("model_shape={vocab_size: 1000, hidden_size: 64, intermediate_size: 160, num_layers: 2, "
         "num_attention_heads: 4, num_query_groups: 2, head_dim: 16, max_position_embeddings: 64}")


@pytest.fixture(scope="module")
def tokenized(demo_corpus_dir, demo_tokenizer_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("pretrain_data")
    prefixes = []
    for k, shards in enumerate((["00000", "00001"], ["00002", "00003"])):
        data = base / f"c4-train.en_{k}.json.gz"
        concatenate([demo_corpus_dir / f"c4-train.{s}-of-00004.json.gz" for s in shards], data)
        prefixes.append(base / f"c4-train.en_{k}_text_document")
        tokenize_file(data, prefixes[-1], demo_tokenizer_path)
    val = base / "c4-validation.json.gz"
    concatenate(sorted(demo_corpus_dir.glob("c4-validation.*")), val)
    tokenize_file(val, base / "val_text_document", demo_tokenizer_path)
    return base, prefixes, base / "val_text_document"


def _run(module, *args):
    return _run_cmd(["-m", module, *args])


def _run_cmd(args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def test_pretraining_on_own_indexed_data(tokenized, tmp_path):
    base, prefixes, val = tokenized
    cache = tmp_path / "cache"
    sets = ["--set", SHAPE, f"train_data=[{prefixes[0]}, {prefixes[1]}]", "train_weights=[50, 50]",
            f"validation_data={val}", f"index_cache={cache}", "seq_length=64", "global_batch_size=8",
            "micro_batch_size=4", "max_steps=30", "warmup_steps=3", "lr=3e-3", "eval_every_samples=80",
            "eval_samples=16", "target=0.5"]
    _run("workflow_scripts.train.build_index_cache", "--recipe", "demo_pretrain_cpu", "--done", str(tmp_path / "done.json"),
         *sets)
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["train_samples"] >= 240 and any(f.endswith("shuffle_index.npy") for f in done["files"])
    before = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    proc = _run("workflow_scripts.train", "--recipe", "demo_pretrain_cpu", "--out", str(tmp_path / "out"),
                "--ckpt-dir", str(tmp_path / "ckpt"), *sets)
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == before, "training rebuilt the index cache"
    assert "Load the" in proc.stderr  # megatron-core reports loading the prebuilt index files
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "out" / "steps.csv"))]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0] - 1.0, losses
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["quality_metric"] == "log_perplexity" and len(metrics["evals"]) == 3
    assert (tmp_path / "out" / "checkpoint" / "model_config.json").is_file()
    log = (tmp_path / "out" / "mlperf_log.txt").read_text()
    assert '"value": "llama31_8b"' in log and '"key": "train_samples"' in log


@pytest.mark.slow  # several trainer runs: the full suite's
def test_a_corrupt_newest_full_model_checkpoint_falls_back_to_the_previous_one(tokenized, tmp_path):
    """Full-model checkpoints are megatron dist checkpoints, whose reader fails with torch's CheckpointException (a
    BaseException): a cut chunk file in the newest one is named and the previous complete one resumed, with the
    uninterrupted run's losses."""
    base, prefixes, val = tokenized
    sets = ["--set", SHAPE, f"train_data=[{prefixes[0]}]", f"validation_data={val}",
            f"index_cache={tmp_path / 'cache'}", "seq_length=64", "global_batch_size=4", "micro_batch_size=4",
            "max_steps=6", "warmup_steps=1", "lr=3e-3", "eval_every_samples=1000", "eval_samples=4", "target=0.5",
            "checkpoint_every_steps=2"]  # saves at steps 2 and 4
    _run("workflow_scripts.train.build_index_cache", "--recipe", "demo_pretrain_cpu", "--done", str(tmp_path / "d.json"),
         *sets)
    args = ["workflow_scripts.train", "--recipe", "demo_pretrain_cpu", *sets]
    _run(*args, "--out", str(tmp_path / "whole"), "--ckpt-dir", str(tmp_path / "ckpt"))
    chunk = next((tmp_path / "ckpt" / "step_00000004").rglob("*.distcp"))
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    again = _run(*args, "--out", str(tmp_path / "again"), "--ckpt-dir", str(tmp_path / "ckpt"))
    assert f"checkpoint {tmp_path / 'ckpt' / 'step_00000004'} cannot be read" in again.stderr
    assert f"resumed from {tmp_path / 'ckpt' / 'step_00000002'} (step 2)" in again.stderr
    losses = [[r["loss"] for r in csv.DictReader(open(tmp_path / run / "steps.csv"))] for run in ("whole", "again")]
    assert len(losses[0]) == 6 and losses[1] == losses[0], losses


@pytest.mark.slow  # several processes (gloo)
@pytest.mark.parametrize("layout", [{"pipeline_parallel": 2}, {"tensor_parallel": 2, "sequence_parallel": True}],
                         ids=["pp2", "tp2_sequence_parallel"])
def test_two_process_layout_pretraining_equals_one_and_its_model_exports_the_same(tokenized, tmp_path, layout):
    """Two pipeline stages, or TP 2 with sequence parallelism (every weight trained, so the norms' partial
    gradients over each rank's sequence slice must be summed), give the same losses, gradient norms and log
    perplexity as one process, and the final checkpoint (saved from two ranks) exports to the same HF tensors. Both
    start from one converted checkpoint: random init draws each stage's layers from its own RNG stream, so it
    differs between layouts (as in Megatron-LM)."""
    from safetensors.torch import load_file

    base, prefixes, val = tokenized
    _, mcore = make_model(tmp_path)
    sets = ["--set", f"checkpoint={mcore}", f"train_data=[{prefixes[0]}, {prefixes[1]}]", "train_weights=[50, 50]",
            f"validation_data={val}", f"index_cache={tmp_path / 'cache'}", "seq_length=64", "global_batch_size=8",
            "micro_batch_size=4", "max_steps=4", "warmup_steps=1", "lr=3e-3", "eval_every_samples=16",
            "eval_samples=12", "eval_skip=0", "target=0.5"]
    _run("workflow_scripts.train.build_index_cache", "--recipe", "demo_pretrain_cpu", "--done", str(tmp_path / "d.json"),
         *sets)
    for name, launch in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc-per-node=2",
                                                 f"--master-port={free_port()}"])):
        extra = [f"{k}={v}" for k, v in layout.items()] if name == "two" else []
        _run_cmd([*launch, "-m", "workflow_scripts.train", "--recipe", "demo_pretrain_cpu", "--out",
                  str(tmp_path / name), "--ckpt-dir", str(tmp_path / f"{name}_ckpt"), *sets, *extra])
        _run("workflow_scripts.convert", "mcore-to-hf", "--mcore", str(tmp_path / name / "checkpoint"),
             "--out", str(tmp_path / f"{name}_hf"))
    steps = [list(csv.DictReader(open(tmp_path / run / "steps.csv"))) for run in ("one", "two")]
    one, two = ([float(r["loss"]) for r in run] for run in steps)
    assert len(one) == 4 and max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
    norms = [[float(r["grad_norm"]) for r in run] for run in steps]
    assert max(abs(a - b) / a for a, b in zip(*norms)) < 1e-4, norms
    evals = [json.loads((tmp_path / run / "metrics.json").read_text())["evals"] for run in ("one", "two")]
    assert len(evals[0]) == 2 and all(abs(a["eval_loss"] - b["eval_loss"]) < 1e-5 for a, b in zip(*evals))
    saved = json.loads((tmp_path / "two" / "checkpoint" / "model_config.json").read_text())
    parallel = json.loads((tmp_path / "two" / "metrics.json").read_text())["parallel"]
    if "pipeline_parallel" in layout:
        assert saved["pipeline_model_parallel_size"] == 2 and parallel["pipeline"] == 2
    else:
        assert saved["tensor_model_parallel_size"] == 2 and parallel["tensor"] == 2
        assert json.loads((tmp_path / "two" / "resolved_config.json").read_text())["sequence_parallel"] is True
    hf1, hf2 = (load_file(next((tmp_path / f"{run}_hf").glob("*.safetensors"))) for run in ("one", "two"))
    assert hf1.keys() == hf2.keys() and max(float((hf1[k] - hf2[k]).abs().max()) for k in hf1) < 1e-5


def test_c4_path_and_pretraining_with_a_vocabulary_above_65500_use_int32(tmp_path):
    """A Llama-3-sized vocabulary (70,001 > 65,500 ids, as Llama 3.1's 128,256): raw shards are consolidated and
    tokenized to an int32 .bin whose ids above 65,535 survive, and a short pretraining run trains on it."""
    import gzip

    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    from workflow_scripts.data.c4_consolidate import concatenate as consolidate

    words = 70_000
    vocab = {f"w{i}": i for i in range(words)}
    vocab["[UNK]"] = words
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    shards = []
    for k in range(2):  # raw C4-style shards: json lines with text, gzip
        docs = [{"text": " ".join(f"w{i}" for i in rng.integers(words - 50, words, size=int(rng.integers(40, 120))))}
                for _ in range(60)]
        shards.append(tmp_path / f"c4-train.{k:05d}-of-00002.json.gz")
        shards[-1].write_bytes(gzip.compress("".join(json.dumps(d) + "\n" for d in docs).encode()))
    consolidate(shards, tmp_path / "c4-train.en_0.json.gz")
    stats = tokenize_file(tmp_path / "c4-train.en_0.json.gz", tmp_path / "train_text_document", tmp_path / "tokenizer.json")
    assert stats["dtype"] == "int32" and stats["documents"] == 120
    ids = np.fromfile(tmp_path / "train_text_document.bin", dtype=np.int32)
    assert ids.size == stats["tokens"] and ids.max() > 65_535 and ids.min() >= words - 50
    shape = ("model_shape={vocab_size: 70001, hidden_size: 32, intermediate_size: 64, num_layers: 1, "
             "num_attention_heads: 2, num_query_groups: 1, head_dim: 16, max_position_embeddings: 32}")
    prefix = tmp_path / "train_text_document"
    sets = ["--set", shape, f"train_data=[{prefix}]", f"validation_data={prefix}", f"index_cache={tmp_path / 'cache'}",
            "seq_length=32", "global_batch_size=4", "micro_batch_size=4", "max_steps=4", "warmup_steps=1",
            "eval_every_samples=16", "eval_samples=8", "target=0.0"]
    _run("workflow_scripts.train.build_index_cache", "--recipe", "demo_pretrain_cpu", "--done", str(tmp_path / "done.json"),
         *sets)
    _run("workflow_scripts.train", "--recipe", "demo_pretrain_cpu", "--out", str(tmp_path / "out"),
         "--ckpt-dir", str(tmp_path / "ckpt"), *sets)
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "out" / "steps.csv"))]
    # ln(70,001) = 11.2 at random init: the int32 ids reach the 70,001-row embedding, not ids wrapped to 16 bits
    assert len(losses) == 4 and all(10.0 < loss < 12.0 for loss in losses), losses
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["evals"]
