"""Generation under LoadGen's Offline scenario in accuracy mode (the real mlperf_loadgen): LoadGen's accuracy log holds
the ids that generating without LoadGen gives, its summary and detail name the test, a failed run leaves nothing."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer

from workflow_scripts.convert.conversion import hf_to_mcore
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.inference import generate as G
from workflow_scripts.inference import loadgen_run as LR
from workflow_scripts.inference.accuracy_log import read_accuracy_log
from workflow_scripts.model.llama_model import LlamaConfig, shutdown_parallel

CFG = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_layers=2, head_dim=8,
                  num_attention_heads=8, num_query_groups=2, max_position_embeddings=128)
MAX_NEW, BATCH = 6, 2
OUTPUTS = ["mlperf_log_accuracy.json", "mlperf_log_detail.txt", "mlperf_log_summary.txt"]


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(9)
    return [torch.randint(5, 300, (n,), generator=gen).tolist() for n in (7, 12, 3, 9, 12, 5)]


@pytest.fixture(scope="module")
def mcore_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen_lg_model")
    hf = write_llama(base / "hf", CFG, seed=11, init_std=0.3)
    return hf_to_mcore(hf, base / "mcore", tp=1, pp=1, spec="local")


@pytest.fixture(scope="module")
def reference(mcore_dir, demo_tokenizer_path):
    """The ids of the generation function called directly (no LoadGen), with the tokenizer's EOS."""
    eos = Tokenizer.from_file(str(demo_tokenizer_path)).token_to_id("</s>")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, cfg = G.load_model(mcore_dir)
        outputs = G.generate_all(model, cfg.vocab_size, _prompts(), MAX_NEW, eos, batch_size=BATCH)
    finally:
        shutdown_parallel()
        torch.set_num_threads(threads)
    return dict(enumerate(outputs))


def _args(mcore_dir, tokenizer, tmp_path, out):
    samples = tmp_path / "samples.pkl"
    pd.DataFrame({"tok_input": _prompts(), "output": ["x"] * len(_prompts())}).to_pickle(samples)
    return ["--mcore", str(mcore_dir), "--samples", str(samples), "--tokenizer", str(tokenizer), "--eos-token", "</s>",
            "--out", str(out / OUTPUTS[0]), "--summary", str(out / OUTPUTS[2]), "--detail", str(out / OUTPUTS[1]),
            "--stats", str(out / "generate.json"), "--max-new-tokens", str(MAX_NEW), "--min-new-tokens", "1",
            "--batch-size", str(BATCH), "--limit", "0", "--tp", "1", "--threads", "1"]


def test_loadgen_accuracy_log_holds_the_directly_generated_ids(mcore_dir, demo_tokenizer_path, tmp_path, reference):
    out = tmp_path / "inference"
    assert G.main(_args(mcore_dir, demo_tokenizer_path, tmp_path, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "generate.json"])  # no temporary folder left
    assert read_accuracy_log(out / OUTPUTS[0]) == reference
    entries = json.loads((out / OUTPUTS[0]).read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(len(_prompts())))  # each sample once, LoadGen's order
    stats = json.loads((out / "generate.json").read_text())
    assert stats["samples"] == len(_prompts()) and stats["generated_tokens"] == sum(map(len, reference.values()))
    loadgen = stats["loadgen"]
    assert (loadgen["scenario"], loadgen["mode"], loadgen["query_samples"]) == ("Offline", "AccuracyOnly", 6)
    assert (loadgen["effective_scenario"], loadgen["effective_test_mode"]) == ("Offline", "AccuracyOnly")
    assert loadgen["qsl_reported_total_count"] == loadgen["qsl_reported_performance_count"] == 6
    assert loadgen["generated_query_count"] == 1 and loadgen["loadgen_version"].startswith("6.0.17")


def test_summary_and_detail_name_the_offline_accuracy_test(mcore_dir, demo_tokenizer_path, tmp_path):
    out = tmp_path / "inference"
    assert G.main([*_args(mcore_dir, demo_tokenizer_path, tmp_path, out), "--limit", "4"]) == 0
    summary = (out / OUTPUTS[2]).read_text()
    # In accuracy mode LoadGen's summary holds only its warning/error verdict; the detail log names the test.
    assert "No warnings encountered during test." in summary and "No errors encountered during test." in summary
    detail, errors = LR.read_detail(out / OUTPUTS[1])
    assert errors == []
    assert (detail["requested_scenario"], detail["effective_scenario"]) == ("Offline", "Offline")
    assert (detail["requested_test_mode"], detail["effective_test_mode"]) == ("AccuracyOnly", "AccuracyOnly")
    assert detail["qsl_reported_total_count"] == detail["generated_samples_per_query"] == 4  # --limit: the QSL
    assert sorted(read_accuracy_log(out / OUTPUTS[0])) == [0, 1, 2, 3]


def test_a_failed_generation_leaves_no_log_and_loadgen_ends(mcore_dir, demo_tokenizer_path, tmp_path, monkeypatch,
                                                            reference):
    out = tmp_path / "inference"

    def fail(*args, **kwargs):
        raise RuntimeError("generation failed on purpose")

    with monkeypatch.context() as patch:
        patch.setattr(G, "generate_sharded", fail)
        with pytest.raises(RuntimeError, match="on purpose"):
            G.main(_args(mcore_dir, demo_tokenizer_path, tmp_path, out))
    assert not out.exists() or list(out.iterdir()) == []  # LoadGen's partial logs went with its temporary folder
    assert G.main(_args(mcore_dir, demo_tokenizer_path, tmp_path, out)) == 0  # LoadGen was left in a clean state
    assert read_accuracy_log(out / OUTPUTS[0]) == reference


def test_loadgen_run_answers_given_ids_and_refuses_no_samples(tmp_path):
    paths = LR.LogPaths(tmp_path / OUTPUTS[0], tmp_path / OUTPUTS[2], tmp_path / OUTPUTS[1])
    with pytest.raises(PipelineInputError, match="at least one sample"):
        LR.AccuracyRun(0, paths)
    run = LR.AccuracyRun(3, paths)
    try:
        run.start()
        rows = run.query_rows()
        run.complete({row: [row, 7, 2**31 - 1] for row in rows})
        result = run.finish()
    finally:
        run.close()
    assert rows == [0, 1, 2] and result["query_samples"] == 3
    assert read_accuracy_log(paths.accuracy) == {row: [row, 7, 2**31 - 1] for row in rows}


def test_read_detail_refuses_a_broken_line_naming_the_file(tmp_path):
    bad = tmp_path / "mlperf_log_detail.txt"
    bad.write_text(':::MLLOG {"key": "a", "value": 1}\n:::MLLOG {"key": \n')
    with pytest.raises(PipelineInputError, match=r"mlperf_log_detail\.txt: line 2: not a LoadGen log entry"):
        LR.read_detail(bad)
