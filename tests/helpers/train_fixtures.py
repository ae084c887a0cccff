"""A tiny converted Llama and packed GovReport-format rows for trainer tests, and a runner for the trainer CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from seams import seam_env
from workflow_scripts.convert.conversion import hf_to_mcore
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.model.llama_model import LlamaConfig

REPO = Path(__file__).resolve().parents[2]
SEQ = 64
TINY = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=160, num_layers=2, num_attention_heads=8,
                   num_query_groups=2, head_dim=8, max_position_embeddings=128)


def make_model(base: Path) -> tuple[Path, Path]:
    hf = write_llama(base / "hf", TINY, seed=21)
    return hf, hf_to_mcore(hf, base / "mcore", tp=1, pp=1, spec="local")


def packed_rows(path: Path, rows: int, seed: int, answer_from: int = SEQ // 2) -> Path:
    """MLPerf-format rows: loss mask 0 on a 'prompt' prefix, 1 on the 'answer' (last row gets no answer at all)."""
    rng = np.random.default_rng(seed)
    out = np.empty(rows, dtype=object)
    for i in range(rows):
        mask = np.zeros(SEQ, dtype=np.int64)
        if i != rows - 1:
            mask[answer_from + (i % 5):] = 1
        out[i] = {"input_ids": rng.integers(0, TINY.vocab_size, SEQ).astype(np.int32), "loss_mask": mask.tolist(),
                  "seq_start_id": [0]}
    np.save(path, out, allow_pickle=True)
    return path


def train_cli(out: Path, ckpt: Path, *sets: str, env: dict | None = None, nproc: int = 1,
              check: bool = True, recipe: str = "demo_lora_cpu") -> subprocess.CompletedProcess:
    args = ["-m", "workflow_scripts.train", "--recipe", recipe, "--out", str(out), "--ckpt-dir", str(ckpt),
            "--set", *sets]
    if nproc > 1:
        from distributed import free_port

        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               f"--master-port={free_port()}", *args]
    else:
        cmd = [sys.executable, *args]
    # `env`: test seam variables (PIPELINE_TEST_*); the seams folder is on PYTHONPATH, doing nothing without them
    run_env = seam_env(dict(os.environ, OMP_NUM_THREADS="1"), REPO, **(env or {}))
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc
