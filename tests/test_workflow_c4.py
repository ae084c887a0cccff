"""The C4 stages inside the demo workflow: golden counts, `cat`-exact consolidation, progress logs, up-to-date rerun."""
from __future__ import annotations

import gzip
import json
import subprocess

from conftest import run_snakemake

# Golden values of the default demo config (seed 1234, 16 train shards x 120 docs, 8 validation shards x 100 docs,
# 2048-token demo BPE; the templated demo language of demo_c4_corpus), computed once by the workflow: (documents, skipped empty documents, tokens).
GOLDEN = {
    "c4-train.en_0": (235, 5, 55351),
    "c4-train.en_6": (237, 3, 65505),
    "c4-train.en_7": (232, 8, 56589),
    "c4-validation-500-samples.en": (488, 12, 155324),
}
DEMO_TOKENIZER_SHA256 = "71573dbc00f5acc5733834ecd94dcb2c7d9ebac7be9681e166a34f5608a51eec"


def test_tokenized_stats_match_golden_values(demo_run):
    for name, (documents, skipped, tokens) in GOLDEN.items():
        stats = json.loads((demo_run / f"results/c4/tokenized/{name}_text_document.stats.json").read_text())
        assert (stats["documents"], stats["skipped_empty"], stats["tokens"]) == (documents, skipped, tokens), name
        assert stats["dtype"] == "uint16" and stats["tokenizer_sha256"] == DEMO_TOKENIZER_SHA256
    groups = sorted((demo_run / "results/c4/tokenized").glob("c4-train.en_*_text_document.bin"))
    assert [p.name for p in groups] == [f"c4-train.en_{k}_text_document.bin" for k in range(8)]


def test_consolidated_files_are_cat_and_zcat_head(demo_run):
    raw = demo_run / "results/demo/c4/raw"
    shards = [str(raw / f"c4-train.{i:05d}-of-00016.json.gz") for i in (12, 13)]
    cat = subprocess.run(["cat", *shards], check=True, capture_output=True).stdout
    assert (demo_run / "results/c4/consolidated/c4-train.en_6.json.gz").read_bytes() == cat
    val_shards = " ".join(str(p) for p in sorted(raw.glob("c4-validation.*.json.gz")))
    head = subprocess.run(f"zcat {val_shards} | head -n 500", shell=True, check=True, capture_output=True).stdout
    assert gzip.decompress((demo_run / "results/c4/consolidated/c4-validation-500-samples.en.json.gz").read_bytes()) == head


def test_rule_logs_show_progress(demo_run):
    log = (demo_run / "logs/c4/tokenize_c4-train.en_6.log").read_text()
    documents, _, tokens = GOLDEN["c4-train.en_6"]
    assert f"docs={documents}" in log and f"tokens={tokens:,}" in log and "/s)" in log and "100.0%" in log


def test_rerun_has_nothing_to_do(demo_run):
    proc = run_snakemake(demo_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
