"""Shared fixtures: the repository root, a small demo tokenizer, and a helper that runs snakemake in a copy."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Triton kernels (the decode-attention kernel) run under Triton's CPU interpreter in tests: set before any module
# that defines a kernel is imported, as @triton.jit reads it then.
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
# Test helpers (fixtures' modules, multi-process drivers, workers, test seams) live in tests/helpers; test modules
# import them as top-level modules (`from slurm_cluster import ...`).
HELPERS = REPO / "tests" / "helpers"
sys.path.insert(0, str(HELPERS))
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# Content of placeholder inputs in planning tests: neither gzip nor JSON, so a plan that read or parsed one would fail.
NOT_DATA = b"placeholder: planning must never read this file\n"


# Fixtures whose tests are never part of `make test-fast`: the whole demo DAG and the real test Slurm.
SLOW_FIXTURES = {"demo_run", "slurm_cluster"}


def pytest_collection_modifyitems(config, items):
    """Tests that use a whole-DAG run or Slurm are `slow` (the full suite's, not the fast tier's); multi-process
    tests carry the mark themselves."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__.startswith("test_slurm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_corpus_dir(tmp_path_factory) -> Path:
    """A tiny generated C4 corpus (4 train + 2 validation shards)."""
    from workflow_scripts.demo.demo_c4_corpus import generate_corpus

    out = tmp_path_factory.mktemp("c4raw")
    generate_corpus(out, train_shards=4, validation_shards=2, train_docs=40, validation_docs=30, seed=7)
    return out


@pytest.fixture(scope="session")
def demo_tokenizer_path(tmp_path_factory, demo_corpus_dir) -> Path:
    """The demo BPE tokenizer (same code as rule demo_tokenizer), trained on the tiny corpus."""
    from workflow_scripts.demo.demo_tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    shards = sorted(demo_corpus_dir.glob("c4-train.*.json.gz"))
    out.write_text(train_tokenizer(shards, vocab_size=1000).to_str())
    return out


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (no results) where a test can run snakemake without touching the checkout."""
    ignore = shutil.ignore_patterns(".git", ".venv", "results", "logs", ".snakemake", "__pycache__", "benchmarks")
    shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The whole default demo (`snakemake` with no arguments) run once in a copy; stage tests inspect its outputs."""
    workdir = copy_workflow(tmp_path_factory.mktemp("demo_run"))
    run_snakemake(workdir, "--cores", "2", timeout=3000)
    return workdir


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(workdir))
    proc = subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc
