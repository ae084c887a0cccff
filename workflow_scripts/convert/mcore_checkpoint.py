"""Writing and reading megatron-core `torch_dist` checkpoints chunk by chunk, without building the model.

A torch_dist checkpoint is a torch.distributed.checkpoint (DCP) folder (`.metadata` + `__0_0.distcp`) of global
tensors, each stored as chunks (megatron writes one chunk per layer and TP rank), plus megatron's `metadata.json`
and `common.pt`. Megatron reshards on load, so one writer serves every TP/PP layout. Chunks are produced lazily
by a custom DCP save planner, so peak memory is about one layer, not the model.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import create_default_global_save_plan
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, TensorWriteData, WriteItem, WriteItemType

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.workers import ThreadErrors, thread_errors

MEGATRON_METADATA = {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                     "common_backend": "torch", "common_backend_version": 1}


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One stored piece of a global tensor, made on demand by `produce`."""

    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]


def extra_state_key(module: str, layer: int = 0, num_layers: int = 1) -> str:
    """Unique key of megatron's `_extra_state` ShardedObject (layers are its only sharded axis; (0, 1) if none)."""
    return f"{module}._extra_state/shard_{layer}_{num_layers}"


def empty_extra_state() -> bytes:
    # megatron serializes the objects of one key as torch.save([obj, ...]); Transformer Engine's extra state without
    # fp8 is an empty uint8 tensor (the local spec ignores its extra state).
    buffer = io.BytesIO()
    torch.save([torch.empty(0, dtype=torch.uint8)], buffer)
    return buffer.getvalue()


class _Cancelled(Exception):
    """Raised by the other writers once one has failed: the checkpoint is lost anyway, stop reading inputs."""


class _LazySavePlanner(SavePlanner):
    """DCP save planner whose items come from Chunk descriptions; tensors are made when the writer asks."""

    def __init__(self, chunks: list[Chunk], objects: dict[str, bytes], on_chunk: Callable[[Chunk], None] | None,
                 errors: ThreadErrors):
        self.chunks = {(c.key, c.offset): c for c in chunks}
        if len(self.chunks) != len(chunks):
            raise ValueError("two chunks share a key and offset")
        self.objects, self.on_chunk, self.errors = objects, on_chunk, errors

    def set_up_planner(self, state_dict, storage_meta=None, is_coordinator: bool = True) -> None:  # noqa: ARG002
        pass

    def create_local_plan(self) -> SavePlan:
        items = [
            WriteItem(
                index=MetadataIndex(c.key, torch.Size(c.offset)),
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=torch.Size(c.offset), sizes=torch.Size(c.shape)),
                    properties=TensorProperties(dtype=c.dtype),
                    size=torch.Size(c.global_shape),
                ),
            )
            for c in self.chunks.values()
        ]
        items += [WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO) for key in self.objects]
        return SavePlan(items)

    def create_global_plan(self, all_plans: list[SavePlan]) -> tuple[list[SavePlan], Metadata]:
        return create_default_global_save_plan(all_plans)

    def finish_plan(self, new_plan: SavePlan) -> SavePlan:
        return new_plan

    def resolve_data(self, write_item: WriteItem):
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(self.objects[write_item.index.fqn])
        if self.errors.failed:
            raise _Cancelled("another writer failed")
        chunk = self.chunks[(write_item.index.fqn, tuple(write_item.index.offset))]
        try:
            tensor = chunk.produce()
        except Exception as err:
            self.errors.add(err)  # any writer thread may get here; the first error is what the job reports
            raise
        if tuple(tensor.shape) != chunk.shape or tensor.dtype != chunk.dtype:
            raise RuntimeError(f"{chunk.key} at {chunk.offset}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                               f"planned {chunk.shape} {chunk.dtype}")
        if self.on_chunk:
            self.on_chunk(chunk)
        return tensor.contiguous()

    def missing(self, metadata: Metadata) -> list[str]:
        """Planned items that the written metadata has no storage record of (a writer that died without a word)."""
        stored = {(i.fqn, tuple(i.offset) if i.offset is not None else None) for i in metadata.storage_data}
        missing = [f"{key} at {offset}" for key, offset in self.chunks if (key, offset) not in stored]
        return missing + [key for key in self.objects if (key, None) not in stored]


def write_checkpoint(out_dir: Path, chunks: list[Chunk], objects: dict[str, bytes],
                     on_chunk: Callable[[Chunk], None] | None = None, threads: int = 1) -> None:
    """Write a complete torch_dist folder into `out_dir` (an empty, existing folder).

    `threads` > 1 writes that many `.distcp` files in parallel (reads and transforms overlap with writes); each
    thread holds about one layer of tensors.
    """
    writer = FileSystemWriter(out_dir, single_file_per_rank=True, thread_count=threads, sync_files=True)
    # Each chunk is a torch.save record; its zip CRC32 costs a CPU pass over the data and torch.load never checks it.
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        # DCP's extra writer threads die with a printed traceback and DCP returns without their files' records
        # (the output looked complete): their errors are collected and raised here instead.
        with thread_errors() as errors:
            planner = _LazySavePlanner(chunks, objects, on_chunk, errors)
            try:
                dcp_save({}, storage_writer=writer, planner=planner, no_dist=True)
            except CheckpointException as err:
                errors.raise_first(err)  # the chunk producer's own error (bad input keeps exit code 2)
                raise
    finally:
        torch.serialization.set_crc32_options(crc32)
    # The records as written to .metadata (the object dcp_save returns has no storage_data in torch 2.11).
    missing = planner.missing(FileSystemReader(str(out_dir)).read_metadata())
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} of {len(planner.chunks) + len(objects)} checkpoint items were "
                           f"not written (first: {missing[0]})")
    torch.save({}, out_dir / "common.pt")
    (out_dir / "metadata.json").write_text(json.dumps(MEGATRON_METADATA))


class McoreReader:
    """Reads regions of the global tensors of a torch_dist folder straight from its chunk files."""

    def __init__(self, ckpt_dir: Path | str):
        self.dir = Path(ckpt_dir)
        meta_file = self.dir / "metadata.json"
        if not meta_file.is_file():
            raise PipelineInputError(f"{meta_file}: not found (not a megatron-core dist checkpoint)")
        backend = json.loads(meta_file.read_text()).get("sharded_backend")
        if backend != "torch_dist":
            raise PipelineInputError(f"{meta_file}: sharded_backend {backend!r} is not supported (only torch_dist)")
        self.metadata = FileSystemReader(str(self.dir)).read_metadata()
        self._chunks: dict[str, list[tuple[tuple[int, ...], tuple[int, ...], object]]] = {}
        for index, info in self.metadata.storage_data.items():
            tmeta = self.metadata.state_dict_metadata.get(index.fqn)
            if isinstance(tmeta, TensorStorageMetadata):
                sizes = next(c.sizes for c in tmeta.chunks if tuple(c.offsets) == tuple(index.offset))
                self._chunks.setdefault(index.fqn, []).append((tuple(index.offset), tuple(sizes), info))

    def shape(self, key: str) -> tuple[int, ...]:
        meta = self.metadata.state_dict_metadata.get(key)
        if not isinstance(meta, TensorStorageMetadata):
            raise PipelineInputError(f"{self.dir}: tensor {key!r} is not in the checkpoint")
        return tuple(meta.size)

    def dtype(self, key: str) -> torch.dtype:
        self.shape(key)
        return self.metadata.state_dict_metadata[key].properties.dtype

    def _load_chunk(self, info) -> torch.Tensor:
        if getattr(info, "transform_descriptors", None):
            raise PipelineInputError(f"{self.dir / info.relative_path}: transformed (compressed) chunks are not supported")
        with open(self.dir / info.relative_path, "rb") as handle:
            handle.seek(info.offset)
            data = handle.read(info.length)
        return torch.load(io.BytesIO(data), weights_only=True)

    def read(self, key: str, layer: int | None = None) -> torch.Tensor:
        """The whole global tensor, or layer `layer` of a layer-stacked one, assembled from its chunks."""
        shape = self.shape(key)
        lo = (layer,) if layer is not None else ()
        out_shape = shape[1:] if layer is not None else shape
        out = torch.empty(out_shape, dtype=self.dtype(key))
        covered = 0
        for offset, sizes, info in self._chunks[key]:
            if layer is not None:
                if not offset[0] <= layer < offset[0] + sizes[0]:
                    continue
                piece = self._load_chunk(info)[layer - offset[0]]
                offset, sizes = offset[1:], sizes[1:]
            else:
                piece = self._load_chunk(info)
            out[tuple(slice(o, o + s) for o, s in zip(offset, sizes))] = piece
            covered += piece.numel()
        if covered != out.numel():
            raise PipelineInputError(f"{self.dir}: chunks of {key!r}{lo} cover {covered} of {out.numel()} elements")
        return out

    def keys(self) -> Iterator[str]:
        return iter(self._chunks)
