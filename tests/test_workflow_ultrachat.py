"""The UltraChat stage in the workflow: the demo run's packed splits, and a configured ultrachat_200k-like folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import copy_workflow, run_snakemake
from workflow_scripts.demo import demo_ultrachat
from workflow_scripts.data.packed_parquet import read_packed
from workflow_scripts.data.tokenizer_files import load_tokenizer


def test_demo_splits_are_packed_chunks(demo_run):
    config = yaml.safe_load((demo_run / "config.yaml").read_text())["ultrachat"]
    tokenizer = load_tokenizer(demo_run / "results/ultrachat/tokenizer/tokenizer.json")
    for split in ("train", "test"):
        stats = json.loads((demo_run / f"results/ultrachat/{split}.stats.json").read_text())
        ids, labels = read_packed(demo_run / f"results/ultrachat/{split}.parquet")
        assert ids.shape == (stats["rows"], config["seq_length"]) and np.array_equal(ids, labels)
        assert [p.split("/")[-1].split("-")[0] for p in stats["files"]] == [f"{split}_gen", f"{split}_sft"]
        assert stats["tokens_in"] == stats["tokens_packed"] + stats["dropped_tokens"] and stats["buffers"] > 1
        assert int(ids.max()) < tokenizer.get_vocab_size() and (ids == tokenizer.token_to_id("<|im_end|>")).any()


@pytest.mark.slow  # runs Snakemake on several rules: the full suite's
def test_configured_folder_and_globs(tmp_path, demo_tokenizer_path):
    workdir = copy_workflow(tmp_path / "wf")
    data = tmp_path / "ultrachat_200k" / "data"
    demo_ultrachat.generate(data, 20, 8, seed=5)
    override = {"ultrachat": {"data_dir": str(data), "tokenizer": str(demo_tokenizer_path), "seq_length": 32,
                              "num_of_sequences": 8, "test_glob": "test_sft-*.parquet"}}
    (workdir / "uc.yaml").write_text(yaml.safe_dump(override))
    run_snakemake(workdir, "results/ultrachat/train.parquet", "results/ultrachat/test.parquet",
                  "--cores", "1", "--configfile", "uc.yaml")
    test_stats = json.loads((workdir / "results/ultrachat/test.stats.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in test_stats["files"]] == ["test_sft-00000-of-00001.parquet"]
    assert test_stats["conversations"] == 8 and test_stats["seq_length"] == 32
    assert json.loads((workdir / "results/ultrachat/train.stats.json").read_text())["conversations"] == 40

    (workdir / "bad.yaml").write_text(yaml.safe_dump({"ultrachat": {**override["ultrachat"], "train_glob": "x*.pq"}}))
    proc = run_snakemake(workdir, "results/ultrachat/train.parquet", "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0 and "ultrachat.train_glob: no file matches" in proc.stdout + proc.stderr
