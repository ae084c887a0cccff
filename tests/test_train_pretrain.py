"""Pretraining reads the project's own .bin/.idx through megatron-core's GPTDataset, with the index cache built
beforehand by the CPU entry point, and the loss goes down."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from train_fixtures import REPO
from workflow_scripts.c4_consolidate import concatenate
from workflow_scripts.c4_tokenize import tokenize_file

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
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def test_pretraining_on_own_indexed_data(tokenized, tmp_path):
    base, prefixes, val = tokenized
    cache = tmp_path / "cache"
    sets = ["--set", SHAPE, f"train_data=[{prefixes[0]}, {prefixes[1]}]", "train_weights=[50, 50]",
            f"validation_data={val}", f"index_cache={cache}", "seq_length=64", "global_batch_size=8",
            "micro_batch_size=4", "max_steps=30", "warmup_steps=3", "lr=3e-3", "eval_every_samples=80",
            "eval_samples=16", "target=0.5"]
    _run("workflow_scripts.build_index_cache", "--recipe", "demo_pretrain_cpu", "--done", str(tmp_path / "done.json"),
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
    assert '"value": "llama31_405b"' in log and '"key": "train_samples"' in log
