"""Conversion of a Llama-2-7B-shaped checkpoint (random bf16, ~13.5 GB) next to `cp` of the same files.

    python benchmarks/convert_7b.py [--workdir /tmp/convert_7b_bench] [--layers 32] [--keep]

Generates the HF checkpoint (8 safetensors shards + index), then measures wall time and peak RSS (/usr/bin/time)
of: `cp -r` + fsync of the HF folder; `convert hf-to-mcore` (tp 8, te spec); `cp -r` + fsync of the megatron
folder; `convert mcore-to-hf`. The round trip is checked on a few tensors. Everything is deleted afterwards unless
--keep. Targets (issue): conversion <= 2x the copy time, peak RSS < 4 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow_scripts.convert import mcore_layout as L  # noqa: E402
from workflow_scripts.convert.hf_checkpoint import INDEX, SafetensorsFile, write_sharded  # noqa: E402
from workflow_scripts.model.llama_model import LlamaConfig, hf_config_dict  # noqa: E402


def llama2_7b(layers: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=layers,
                       num_attention_heads=32, num_query_groups=32, head_dim=128, max_position_embeddings=4096,
                       torch_dtype="bfloat16")


def generate(out: Path, cfg: LlamaConfig, layers_per_shard: int = 4) -> None:
    """Random bf16 weights, written shard by shard (one shard in memory at a time)."""
    shapes = L.hf_shapes(cfg)
    gen = torch.Generator().manual_seed(0)

    def draw(shape):
        return (0.02 * torch.randn(shape, generator=gen, dtype=torch.float32)).to(torch.bfloat16)

    def shards():
        n = -(-cfg.num_layers // layers_per_shard)
        for s in range(n):
            tensors = {}
            if s == 0:
                tensors[L.HF_EMBEDDING] = draw(shapes[L.HF_EMBEDDING])
            for layer in range(s * layers_per_shard, min(cfg.num_layers, (s + 1) * layers_per_shard)):
                for name in (L.HF_IN_NORM, L.HF_Q, L.HF_K, L.HF_V, L.HF_O, L.HF_POST_NORM, L.HF_GATE, L.HF_UP, L.HF_DOWN):
                    tensors[L.hf_layer(layer, name)] = draw(shapes[name])
            if s == n - 1:
                tensors[L.HF_FINAL_NORM] = draw(shapes[L.HF_FINAL_NORM])
                tensors[L.HF_OUTPUT] = draw(shapes[L.HF_OUTPUT])
            yield f"model-{s + 1:05d}-of-{n:05d}.safetensors", tensors

    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2))
    write_sharded(out, shards())


def measure(label: str, command: list[str]) -> dict:
    """Wall seconds and peak RSS (GiB) of one command, via GNU time."""
    stats = Path(f"/tmp/.bench_time_{os.getpid()}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.monotonic()
    subprocess.run(["/usr/bin/time", "-o", str(stats), "-f", "%e %M", *command], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    print(f"{label}: {wall:.1f} s", flush=True)
    _, max_kb = stats.read_text().split()[-2:]
    stats.unlink()
    return {"step": label, "wall_s": wall, "peak_rss_gib": int(max_kb) / 2**20}


def copy_and_sync(src: Path, dst: Path) -> list[str]:
    # fsync each copied file, as the converter does for its output (no system-wide sync: other jobs share the disk)
    return ["sh", "-c", f"cp -r '{src}' '{dst}' && find '{dst}' -type f -exec sync {{}} +"]


def folder_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/convert_7b_bench"))
    parser.add_argument("--layers", type=int, default=32, help="32 = Llama-2-7B; fewer for a quick trial")
    parser.add_argument("--tp", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="hf-to-mcore writer threads to compare")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.workdir
    if work.exists():
        shutil.rmtree(work)
    hf, mcore, back = work / "hf", work / "mcore", work / "hf_back"
    cfg = llama2_7b(args.layers)
    try:
        t0 = time.monotonic()
        generate(hf, cfg)
        print(f"generated {folder_gb(hf):.2f} GB in {time.monotonic() - t0:.0f} s", flush=True)
        py = sys.executable
        rows = [measure("cp -r HF folder + fsync", copy_and_sync(hf, work / "hf_copy"))]
        shutil.rmtree(work / "hf_copy")
        for i, threads in enumerate(args.threads):
            if i:
                shutil.rmtree(mcore)
            rows.append(measure(f"convert hf-to-mcore (tp {args.tp}, te, {threads} threads)", [
                py, "-m", "workflow_scripts.convert", "hf-to-mcore", "--hf", str(hf), "--out", str(mcore),
                "--tp", str(args.tp), "--pp", "1", "--spec", "te", "--make-vocab-size-divisible-by", "128",
                "--threads", str(threads)]))
        rows.append(measure("cp -r megatron folder + fsync", copy_and_sync(mcore, work / "mcore_copy")))
        shutil.rmtree(work / "mcore_copy")
        rows.append(measure("convert mcore-to-hf", [
            py, "-m", "workflow_scripts.convert", "mcore-to-hf", "--mcore", str(mcore), "--out", str(back)]))
        # spot check of the round trip (full equality is covered by the tests on tiny models)
        for name in (L.hf_layer(0, L.HF_Q), L.hf_layer(0, L.HF_UP), L.HF_OUTPUT):
            src, dst = (SafetensorsFile(d / json.loads((d / INDEX).read_text())["weight_map"][name]) for d in (hf, back))
            assert torch.equal(src.get_tensor(name), dst.get_tensor(name)), name
        sizes = {"hf": folder_gb(hf), "mcore": folder_gb(mcore)}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nLlama-2-7B shape, {args.layers} layers, bf16: HF {sizes['hf']:.2f} GB, megatron {sizes['mcore']:.2f} GB; "
          f"{os.cpu_count()} CPUs")
    print(f"| step | wall s | peak RSS GiB |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['step']} | {row['wall_s']:.1f} | {row['peak_rss_gib']:.2f} |")
    n = len(args.threads)
    ratios = ", ".join(f"{t} threads {rows[1 + i]['wall_s'] / rows[0]['wall_s']:.2f}x" for i, t in enumerate(args.threads))
    print(f"\nhf-to-mcore / cp: {ratios}; mcore-to-hf / cp: {rows[2 + n]['wall_s'] / rows[1 + n]['wall_s']:.2f}x")
    print(f"command: python benchmarks/convert_7b.py --layers {args.layers} --tp {args.tp} --threads {' '.join(map(str, args.threads))}")


if __name__ == "__main__":
    main()
