"""Reading and writing Hugging Face safetensors checkpoints one tensor at a time (memory-mapped, never the whole model).

A checkpoint folder holds config.json plus either `model.safetensors` or shards listed in
`model.safetensors.index.json` (`weight_map`: tensor name -> shard file).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workflow_scripts.convert import mcore_layout as L
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import refuse_lfs_pointer
from workflow_scripts.model.llama_model import DTYPES, LlamaConfig

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _entry_ok(info) -> bool:
    try:
        begin, end = info["data_offsets"]
        return (isinstance(info["dtype"], str) and all(isinstance(n, int) and n >= 0 for n in info["shape"])
                and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end)
    except (KeyError, TypeError, ValueError):
        return False


class SafetensorsFile:
    """A safetensors file read with plain seeks and reads (no mmap), so resident memory is the tensor just read.

    Format: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}}, then the data.
    """

    def __init__(self, path: Path):
        self.path = path
        refuse_lfs_pointer(path)
        try:
            file_size = path.stat().st_size
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                # A garbage length would make the read below allocate that much.
                if file_size < 8 or size > file_size - 8:
                    raise PipelineInputError(f"{path}: not a safetensors file (header of {size} bytes, file of {file_size})")
                header = json.loads(handle.read(size))
        except (OSError, ValueError) as err:
            raise PipelineInputError(f"{path}: not a readable safetensors file ({err})") from err
        if not isinstance(header, dict):
            raise PipelineInputError(f"{path}: not a safetensors file (its header is not a JSON object)")
        header.pop("__metadata__", None)
        self.data_start = 8 + size
        self.header: dict[str, dict] = {name: self._checked_entry(name, info, file_size - self.data_start)
                                        for name, info in header.items()}

    def _checked_entry(self, name: str, info, data_bytes: int) -> dict:
        """A header entry with the fields reads rely on, and its data inside the file (a cut download fails here,
        before anything is written, not at its last tensor)."""
        if not _entry_ok(info):
            raise PipelineInputError(f"{self.path}: tensor {name!r} has a malformed safetensors header entry {info!r}")
        if info["data_offsets"][1] > data_bytes:
            raise PipelineInputError(f"{self.path}: tensor {name!r} ends at data byte {info['data_offsets'][1]}, the "
                                     f"file holds {data_bytes} (truncated)")
        return info

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def dtype_name(self, name: str) -> str:
        return self.header[name]["dtype"]

    def get_tensor(self, name: str) -> torch.Tensor:
        info = self.header[name]
        dtype = ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise PipelineInputError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        raw = torch.empty(end - begin, dtype=torch.uint8)  # not zero-filled: the read overwrites it
        view, done = memoryview(raw.numpy()), 0
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(self.data_start + begin)
            while done < len(view):  # one read() returns at most ~2 GiB
                got = handle.readinto(view[done:])
                if not got:
                    raise PipelineInputError(f"{self.path}: tensor {name!r} is truncated")
                done += got
        return raw.view(dtype).reshape(self.shape(name))


class HFReader:
    """Tensor lookup over a (possibly sharded) safetensors checkpoint, checking each tensor against config.json."""

    def __init__(self, hf_dir: Path | str, cfg: LlamaConfig):
        self.dir, self.cfg = Path(hf_dir), cfg
        self.shapes = L.hf_shapes(cfg)
        self._handles: dict[str, SafetensorsFile] = {}
        index = self.dir / INDEX
        if index.is_file():
            refuse_lfs_pointer(index)
            try:
                self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise PipelineInputError(f"{index}: not a safetensors index with a 'weight_map' ({err})") from err
            for file in sorted(set(self.weight_map.values())):
                if not (self.dir / file).is_file():
                    first = next(n for n, f in self.weight_map.items() if f == file)
                    raise PipelineInputError(f"{self.dir / file}: missing shard (listed in {INDEX} for {first!r})")
        elif (self.dir / SINGLE).is_file():
            self.weight_map = {name: SINGLE for name in self._handle(SINGLE).keys()}
        else:
            raise PipelineInputError(f"{self.dir}: neither {SINGLE} nor {INDEX} found")
        self.fused_qkv = L.hf_layer(0, L.HF_QKV_FUSED) in self.weight_map

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def _handle(self, file: str):
        if file not in self._handles:
            self._handles[file] = SafetensorsFile(self.dir / file)
        return self._handles[file]

    def get(self, name: str) -> torch.Tensor:
        """One tensor, checked for presence, shape and dtype against config.json."""
        if name not in self.weight_map:
            raise PipelineInputError(f"{self.dir}: tensor {name!r} is missing from the checkpoint")
        tensor = self._handle(self.weight_map[name]).get_tensor(name)
        self._check(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        return tensor

    def _check(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        where = self.dir / self.weight_map[name]
        kind = name.split(".", 3)[-1] if name.startswith("model.layers.") else name
        expected = self.shapes.get(kind)
        if expected is not None and shape != expected:
            raise PipelineInputError(f"{where}: tensor {name!r} has shape {shape}, config.json implies {expected}")
        if dtype not in DTYPES:
            raise PipelineInputError(f"{where}: tensor {name!r} has unsupported dtype {dtype}")
        if dtype != self.cfg.torch_dtype:
            raise PipelineInputError(f"{where}: tensor {name!r} is torch.{dtype}, config.json says torch_dtype={self.cfg.torch_dtype}")

    def check_headers(self) -> None:
        """Shapes and dtypes of every expected tensor from the safetensors headers (no tensor data is read)."""
        names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
        for name in self.expected_names():
            handle = self._handle(self.weight_map[name])
            if name not in handle.header:
                raise PipelineInputError(f"{handle.path}: tensor {name!r} is missing (the index lists it in this file)")
            self._check(name, handle.shape(name), names.get(handle.dtype_name(name), handle.dtype_name(name)))

    def qkv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fused_qkv:
            return L.split_fused_qkv(self.cfg, self.get(L.hf_layer(layer, L.HF_QKV_FUSED)))
        return tuple(self.get(L.hf_layer(layer, n)) for n in (L.HF_Q, L.HF_K, L.HF_V))  # type: ignore[return-value]

    def expected_names(self) -> list[str]:
        names = [L.HF_EMBEDDING, L.HF_FINAL_NORM, L.HF_OUTPUT]
        attn = [L.HF_QKV_FUSED] if self.fused_qkv else [L.HF_Q, L.HF_K, L.HF_V]
        for layer in range(self.cfg.num_layers):
            for n in (L.HF_IN_NORM, *attn, L.HF_O, L.HF_POST_NORM, L.HF_GATE, L.HF_UP, L.HF_DOWN):
                names.append(L.hf_layer(layer, n))
        return names

    def check_complete(self) -> None:
        """Fail before writing anything if a tensor is missing or unexpected (e.g. a rotary buffer is fine)."""
        missing = [n for n in self.expected_names() if n not in self.weight_map]
        if missing:
            raise PipelineInputError(f"{self.dir}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        layers = {int(n.split(".")[2]) for n in self.weight_map if n.startswith("model.layers.")}
        extra = sorted(layers - set(range(self.cfg.num_layers)))
        if extra:
            raise PipelineInputError(
                f"{self.dir}: tensors for layer {extra[0]} exist but config.json says num_hidden_layers={self.cfg.num_layers}")


def write_sharded(out_dir: Path, shards: Iterable[tuple[str, dict[str, torch.Tensor]]]) -> None:
    """Write `(file name, tensors)` groups as safetensors shards plus model.safetensors.index.json."""
    weight_map: dict[str, str] = {}
    total = 0
    for file, tensors in shards:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / file), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = file
            total += tensor.numel() * tensor.element_size()
    (out_dir / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")


def load_all(hf_dir: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (tests and tiny models only)."""
    hf_dir = Path(hf_dir)
    files = [SINGLE] if (hf_dir / SINGLE).is_file() else sorted(set(json.loads((hf_dir / INDEX).read_text())["weight_map"].values()))
    out: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(os.fspath(hf_dir / file), framework="pt") as handle:
            out.update({name: handle.get_tensor(name) for name in handle.keys()})
    return out
