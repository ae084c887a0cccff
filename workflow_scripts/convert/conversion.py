"""Checkpoint conversion between Hugging Face Llama (safetensors) and megatron-core dist checkpoints (torch_dist).

    python -m workflow_scripts.convert hf-to-mcore --hf DIR --out DIR --tp N --pp N --spec te|local
        --make-vocab-size-divisible-by 128 --threads N
    python -m workflow_scripts.convert mcore-to-hf --mcore DIR --out DIR [--lora DIR]

Both directions stream: one HF tensor / one layer of one megatron tensor at a time. TP/PP conversion needs no
extra processes: the torch_dist format stores global tensors that megatron reshards on load, so the writer runs
in one process and --tp/--pp are checked (heads, groups, FFN, layers, padded vocab must divide) and recorded in
`model_config.json`, the file the trainer reads. The output folder appears only when complete.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch

from workflow_scripts.convert import mcore_layout as L
from workflow_scripts.core.atomic import naming_full_disk, temp_sibling
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.convert.hf_checkpoint import HFReader, write_sharded
from workflow_scripts.model.lora import LoraAdapter
from workflow_scripts.model.llama_model import LlamaConfig, load_hf_config
from workflow_scripts.convert.mcore_checkpoint import Chunk, McoreReader, empty_extra_state, extra_state_key, write_checkpoint
from workflow_scripts.core.progress import Progress

log = logging.getLogger("convert")
MODEL_CONFIG = "model_config.json"


@contextlib.contextmanager
def atomic_directory(out: Path | str) -> Iterator[Path]:
    """Yield a hidden sibling folder; it becomes `out` only if the block completes."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PipelineInputError(f"{out}: output folder exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hf_to_mcore_chunks(reader: HFReader, cfg: LlamaConfig, qkv_layout: str) -> list[Chunk]:
    """Chunk plan: one chunk per global tensor / per layer; gate and up are separate chunks of linear_fc1."""
    shapes = L.mcore_shapes(cfg)
    dtype, n_layers, ffn = cfg.dtype, cfg.num_layers, cfg.intermediate_size
    qkv_fn = {"grouped": L.interleave_qkv, "naive": L.naive_qkv}[qkv_layout]

    def whole(key: str, produce) -> Chunk:
        return Chunk(key, shapes[key], (0,) * len(shapes[key]), shapes[key], dtype, produce)

    def layer_chunk(key: str, layer: int, produce, row0: int = 0, rows: int | None = None) -> Chunk:
        full = shapes[key]
        inner = (rows if rows is not None else full[1], *full[2:])
        return Chunk(key, full, (layer, row0, *(0,) * (len(full) - 2)), (1, *inner), dtype,
                     lambda: produce().unsqueeze(0))

    chunks = [
        whole(L.EMBEDDING, lambda: L.pad_vocab(cfg, reader.get(L.HF_EMBEDDING))),
        whole(L.FINAL_NORM, lambda: reader.get(L.HF_FINAL_NORM)),
        whole(L.OUTPUT, lambda: L.pad_vocab(cfg, reader.get(L.HF_OUTPUT))),
    ]
    for layer in range(n_layers):
        def get(name: str, layer: int = layer):
            return lambda: reader.get(L.hf_layer(layer, name))

        chunks += [
            layer_chunk(L.QKV_NORM, layer, get(L.HF_IN_NORM)),
            layer_chunk(L.QKV, layer, lambda layer=layer: qkv_fn(cfg, *reader.qkv(layer))),
            layer_chunk(L.PROJ, layer, get(L.HF_O)),
            layer_chunk(L.FC1_NORM, layer, get(L.HF_POST_NORM)),
            layer_chunk(L.FC1, layer, get(L.HF_GATE), 0, ffn),
            layer_chunk(L.FC1, layer, get(L.HF_UP), ffn, ffn),
            layer_chunk(L.FC2, layer, get(L.HF_DOWN)),
        ]
    return chunks


def hf_to_mcore(hf_dir: Path | str, out_dir: Path | str, tp: int = 1, pp: int = 1, spec: str = "local",
                make_vocab_size_divisible_by: int = 128, qkv_layout: str = "grouped", threads: int = 2) -> Path:
    """Convert an HF Llama folder into a torch_dist folder + model_config.json. `qkv_layout="naive"` is a test control."""
    if spec not in ("te", "local"):
        raise PipelineInputError(f"--spec must be 'te' or 'local', got {spec!r}")
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    cfg = load_hf_config(hf_dir, make_vocab_size_divisible_by).with_padding(tp)
    cfg.check_parallel(tp, pp)
    reader = HFReader(hf_dir, cfg)
    reader.check_complete()
    reader.check_headers()
    chunks = _hf_to_mcore_chunks(reader, cfg, qkv_layout)
    objects = {extra_state_key(m, layer, cfg.num_layers): empty_extra_state()
               for layer in range(cfg.num_layers) for m in L.EXTRA_STATE_MODULES}
    objects.update({extra_state_key(m): empty_extra_state() for m in L.GLOBAL_EXTRA_STATE_MODULES})
    progress = Progress(log, "hf-to-mcore", total=len(chunks))
    done, lock = [0], threading.Lock()

    def on_chunk(chunk: Chunk) -> None:
        with lock:  # called from the writer threads
            done[0] += 1
            progress.update(done[0], force=done[0] == len(chunks), chunks=done[0])

    with atomic_directory(out_dir) as tmp, naming_full_disk(out_dir):
        write_checkpoint(tmp, chunks, objects, on_chunk, threads)
        write_model_config(tmp, cfg, tp, pp, spec, cfg.torch_dtype, json.loads((hf_dir / "config.json").read_text()),
                           str(hf_dir))
    log.info("wrote %s (%d chunks, tp=%d pp=%d spec=%s, padded vocab %d)", out_dir, len(chunks), tp, pp, spec,
             cfg.padded_vocab_size)
    return out_dir


def write_model_config(ckpt_dir: Path, cfg: LlamaConfig, tp: int, pp: int, spec: str, dtype: str,
                       hf_config: dict, source: str) -> None:
    """model_config.json beside a torch_dist folder: what the trainer and `mcore-to-hf` read (hf_config included)."""
    meta = {"format": "megatron-core torch_dist", "model": cfg.to_json(), "tensor_model_parallel_size": tp,
            "pipeline_model_parallel_size": pp, "spec": spec, "checkpoint_dtype": dtype, "hf_config": hf_config,
            "source": source}
    (Path(ckpt_dir) / MODEL_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_model_config(mcore_dir: Path | str) -> tuple[LlamaConfig, dict]:
    path = Path(mcore_dir) / MODEL_CONFIG
    if not path.is_file():
        raise PipelineInputError(f"{path}: not found (written by `convert hf-to-mcore`)")
    try:
        meta = json.loads(path.read_text())
        return LlamaConfig.from_json(meta["model"]), meta
    except (json.JSONDecodeError, KeyError, TypeError) as err:  # TypeError names a missing or unknown model key
        raise PipelineInputError(f"{path}: not a {MODEL_CONFIG} of this converter ({type(err).__name__}: {err})") from err


def _hf_layer_tensors(reader: McoreReader, cfg: LlamaConfig, layer: int, lora: LoraAdapter | None) -> dict[str, torch.Tensor]:
    def weight(key: str) -> torch.Tensor:
        tensor = reader.read(key, layer)
        return lora.merge(key, layer, tensor) if lora else tensor

    q, k, v = L.deinterleave_qkv(cfg, weight(L.QKV))
    gate, up = torch.chunk(weight(L.FC1), 2, dim=0)
    named = {
        L.HF_IN_NORM: reader.read(L.QKV_NORM, layer), L.HF_Q: q, L.HF_K: k, L.HF_V: v, L.HF_O: weight(L.PROJ),
        L.HF_POST_NORM: reader.read(L.FC1_NORM, layer), L.HF_GATE: gate.contiguous(), L.HF_UP: up.contiguous(),
        L.HF_DOWN: weight(L.FC2),
    }
    return {L.hf_layer(layer, n): t for n, t in named.items()}


def mcore_to_hf(mcore_dir: Path | str, out_dir: Path | str, lora_dir: Path | str | None = None) -> Path:
    """Write an HF Llama folder (config.json + one safetensors shard per layer + index), merging LoRA if given."""
    mcore_dir, out_dir = Path(mcore_dir), Path(out_dir)
    cfg, meta = read_model_config(mcore_dir)
    reader = McoreReader(mcore_dir)
    for key, shape in L.mcore_shapes(cfg).items():
        if reader.shape(key) != shape:
            raise PipelineInputError(f"{mcore_dir}: tensor {key!r} has shape {reader.shape(key)}, {MODEL_CONFIG} implies {shape}")
    lora = LoraAdapter.load(lora_dir, cfg) if lora_dir else None
    n = cfg.num_layers
    width = len(str(n + 1))
    progress = Progress(log, "mcore-to-hf", total=n + 1)

    def shards():
        for layer in range(n):
            yield f"model-{layer + 1:0{width}d}-of-{n + 1:0{width}d}.safetensors", _hf_layer_tensors(reader, cfg, layer, lora)
            progress.update(layer + 1, layers=layer + 1)
        yield f"model-{n + 1:0{width}d}-of-{n + 1:0{width}d}.safetensors", {
            L.HF_EMBEDDING: reader.read(L.EMBEDDING)[: cfg.vocab_size].contiguous(),
            L.HF_FINAL_NORM: reader.read(L.FINAL_NORM),
            L.HF_OUTPUT: reader.read(L.OUTPUT)[: cfg.vocab_size].contiguous(),
        }
        progress.update(n + 1, force=True, layers=n)

    with atomic_directory(out_dir) as tmp, naming_full_disk(out_dir):
        write_sharded(tmp, shards())
        (tmp / "config.json").write_text(json.dumps(meta["hf_config"], indent=2) + "\n")
    log.info("wrote %s%s", out_dir, f" (merged LoRA from {lora_dir})" if lora_dir else "")
    return out_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_mcore = sub.add_parser("hf-to-mcore", help="HF Llama folder -> megatron-core torch_dist folder")
    to_mcore.add_argument("--hf", required=True, type=Path, help="folder with config.json + safetensors")
    to_mcore.add_argument("--out", required=True, type=Path)
    to_mcore.add_argument("--tp", type=int, required=True, help="tensor parallel size the trainer will use")
    to_mcore.add_argument("--pp", type=int, required=True, help="pipeline parallel size the trainer will use")
    to_mcore.add_argument("--spec", choices=("te", "local"), required=True, help="layer spec the trainer will use")
    to_mcore.add_argument("--make-vocab-size-divisible-by", type=int, required=True)
    to_mcore.add_argument("--threads", type=int, required=True, help="parallel writer threads (each holds ~1 layer)")
    to_hf = sub.add_parser("mcore-to-hf", help="megatron-core torch_dist folder -> HF Llama folder")
    to_hf.add_argument("--mcore", required=True, type=Path)
    to_hf.add_argument("--out", required=True, type=Path)
    to_hf.add_argument("--lora", type=Path, default=None, help="LoRA adapter folder to merge (see workflow_scripts/model/lora.py)")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hf-to-mcore":
        hf_to_mcore(args.hf, args.out, args.tp, args.pp, args.spec, args.make_vocab_size_divisible_by,
                    threads=args.threads)
    else:
        mcore_to_hf(args.mcore, args.out, args.lora)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
