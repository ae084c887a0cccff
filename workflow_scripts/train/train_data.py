"""Training and validation data for the trainer.

- Packed rows (GovReport `train.npy`/`validation.npy`, UltraChat packed parquet): row i gives tokens = ids (all S),
  targets = ids[1:] and loss_mask = mask[1:], with the last position's prediction masked out: the HF reference's
  label-aligned semantics (§1.5) on the reference's S-token input (S = 8192 keeps FP8's divisibility rules; with causal
  attention the first S-1 positions are exactly those of an (S-1)-token input).
- Pretraining: megatron-core GPTDataset through BlendedMegatronDatasetBuilder over the tokenized C4 prefixes, each
  first checked against its stats.json (one tokenization run's .bin and .idx, workflow_scripts/data/tokenized_set.py).
The training order is a pure function of (seed, global sample number), so a resumed run reads exactly what an
uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import refuse_lfs_pointer
from workflow_scripts.data.tokenized_set import read_stats


@dataclass
class Batch:
    tokens: torch.Tensor     # [b, s] int64
    targets: torch.Tensor    # [b, s] int64
    loss_mask: torch.Tensor  # [b, s] float32

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        return Batch(*(t.to(device, non_blocking=True) for t in (self.tokens, self.targets, self.loss_mask)))


class PackedRows:
    """Fixed-length packed rows with a 0/1 loss mask per token."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray, source: str):
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise PipelineInputError(f"{source}: expected equal-shaped 2-D ids and mask, got {ids.shape} / {mask.shape}")
        self.ids, self.mask, self.source = ids, mask, source

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def row_length(self) -> int:
        return self.ids.shape[1]

    def check_vocabulary(self, vocab_size: int) -> None:
        """Every id in [0, vocab_size): one min and one max over the array. An id outside would index past the
        embedding (on a GPU an asynchronous device assert that names no file)."""
        if self.ids.size == 0 or (self.ids.min() >= 0 and self.ids.max() < vocab_size):
            return
        outside = (self.ids < 0) | (self.ids >= vocab_size)
        row = int(np.flatnonzero(outside.any(axis=1))[0])  # error path only
        column = int(np.flatnonzero(outside[row])[0])
        raise PipelineInputError(f"{self.source}: row {row} (0-based), position {column}: token id "
                                 f"{self.ids[row, column]} is outside the model's vocabulary (0..{vocab_size - 1})")

    def batch(self, indices: list[int]) -> Batch:
        ids = torch.from_numpy(self.ids[indices].astype(np.int64))
        mask = torch.from_numpy(self.mask[indices].astype(np.float32))
        targets = torch.zeros_like(ids)
        targets[:, :-1] = ids[:, 1:]
        loss_mask = torch.zeros_like(mask)
        loss_mask[:, :-1] = mask[:, 1:]
        return Batch(ids, targets, loss_mask)


def load_packed(path: str | Path, vocab_size: int) -> PackedRows:
    """`.npy` in the MLPerf format (object array of dicts) or packed parquet (input_ids, labels with -100); every
    token id must be in [0, vocab_size)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: training data not found")
    refuse_lfs_pointer(path)
    rows = _load_npy(path) if path.suffix == ".npy" else _load_parquet(path)
    rows.check_vocabulary(vocab_size)
    return rows


def _load_npy(path: Path) -> PackedRows:
    try:
        rows = np.load(path, allow_pickle=True)
    except Exception as err:  # a cut or damaged pickle stream can fail with almost any exception type
        raise PipelineInputError(f"{path}: not a readable .npy file, truncated or damaged ({type(err).__name__}: "
                                 f"{err})") from err
    if not isinstance(rows, np.ndarray) or rows.dtype != object or rows.ndim != 1:
        kind = f"an array of {rows.dtype}, shape {rows.shape}" if isinstance(rows, np.ndarray) else type(rows).__name__
        raise PipelineInputError(f"{path}: holds {kind}, not MLPerf packed rows (a 1-D object array of "
                                 "{input_ids, loss_mask} dicts)")
    if len(rows) == 0:
        raise PipelineInputError(f"{path}: no rows")
    try:
        ids = np.stack([np.asarray(r["input_ids"]) for r in rows])
        mask = np.stack([np.asarray(r["loss_mask"]) for r in rows])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise PipelineInputError(f"{path}: not an MLPerf packed .npy (rows of input_ids/loss_mask): {err}") from err
    for name, values, kinds in (("input_ids", ids, "iu"), ("loss_mask", mask, "iub")):
        if values.dtype.kind not in kinds:  # a cast would silently truncate 3.7 to 3
            raise PipelineInputError(f"{path}: {name} hold {values.dtype} values, not integers")
    return PackedRows(ids.astype(np.int64, copy=False), mask.astype(np.int8, copy=False), str(path))


def _load_parquet(path: Path) -> PackedRows:
    import pyarrow as pa

    from workflow_scripts.data.packed_parquet import read_packed

    try:
        ids, labels = read_packed(path)
    except (pa.ArrowException, OSError, ValueError) as err:  # ValueError: rows of unequal length
        raise PipelineInputError(f"{path}: not a readable packed parquet file ({err})") from err
    if len(ids) == 0:
        raise PipelineInputError(f"{path}: no rows")
    return PackedRows(ids.astype(np.int64), (labels != -100).astype(np.int8), str(path))


def sample_order(num_rows: int, seed: int, first: int, count: int) -> list[int]:
    """Rows for global sample numbers first .. first+count-1: a fresh permutation per epoch, seeded by (seed, epoch)."""
    out, perms = [], {}
    for j in range(first, first + count):
        epoch, k = divmod(j, num_rows)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(num_rows)
        out.append(int(perms[epoch][k]))
    return out


class GPTBatches:
    """megatron-core GPTDatasets (train blend + validation) with the reference's settings (§2.4)."""

    def __init__(self, prefixes, weights, validation_prefix: str, seq_length: int, seed: int, train_samples: int,
                 valid_samples: int, cache: str, vocab_size: int):
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

        for prefix in [*prefixes, validation_prefix]:
            read_stats(prefix)  # .bin, .idx and stats.json present and from one tokenization run
        weights = list(weights) if weights else None
        config = GPTDatasetConfig(
            random_seed=seed, sequence_length=seq_length,
            blend_per_split=[(list(prefixes), weights), ([validation_prefix], None), None],
            path_to_cache=cache or None, tokenizer=_TokenizerInfo(vocab_size),
            reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
            mmap_bin_files=True,
        )
        train, valid, _ = BlendedMegatronDatasetBuilder(
            GPTDataset, [train_samples, valid_samples, None], lambda: True, config).build()
        self.train, self.valid = train, valid

    @classmethod
    def for_config(cls, cfg, vocab_size: int) -> "GPTBatches":
        """The datasets a pretraining TrainConfig asks for. The trainer and the index-cache rule both build them here:
        the cache is keyed by the dataset description, so any difference would silently rebuild it at training."""
        return cls(cfg.train_data, cfg.train_weights, cfg.validation_data, cfg.seq_length, cfg.seed,
                   cfg.last_step * cfg.global_batch_size, cfg.eval_samples or cfg.global_batch_size,
                   cfg.index_cache, vocab_size)

    @staticmethod
    def _batch(dataset, indices: list[int]) -> Batch:
        items = [dataset[i] for i in indices]
        tokens = torch.stack([torch.as_tensor(it["tokens"]) for it in items]).long()
        targets = torch.stack([torch.as_tensor(it["labels"]) for it in items]).long()
        mask = torch.stack([torch.as_tensor(it["loss_mask"]) for it in items]).float()
        return Batch(tokens, targets, mask)

    def train_batch(self, indices: list[int]) -> Batch:
        return self._batch(self.train, indices)

    def valid_batch(self, indices: list[int]) -> Batch:
        return self._batch(self.valid, indices)


class _TokenizerInfo:
    """What GPTDataset asks of a tokenizer. Its eod/pad ids matter only for eod_mask_loss and reset_* options, which the
    reference leaves off (and the C4 data has no EOD tokens), so out-of-vocabulary ids are given."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self.eod, self.pad = vocab_size, vocab_size, vocab_size + 1
        self.unique_identifiers = {"class": "pipeline-tokenizer", "vocab_size": vocab_size}
