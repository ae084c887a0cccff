"""C4 file names and shard grouping, exactly as the MLPerf Llama 3.1 `consolidate_data.sh` lays them out."""
from __future__ import annotations

import re
from pathlib import Path

from workflow_scripts.core.errors import PipelineInputError

_RAW_NAME = re.compile(r"^c4-(train|validation)\.(\d{5})-of-(\d{5})\.json\.gz$")


def raw_name(split: str, index: int, total: int) -> str:
    """`c4-train.00042-of-01024.json.gz`."""
    return f"c4-{split}.{index:05d}-of-{total:05d}.json.gz"


def group_size(train_shards: int, train_groups: int) -> int:
    if train_groups <= 0 or train_shards % train_groups:
        raise PipelineInputError(
            f"config c4.train_shards ({train_shards}) is not divisible by c4.train_groups ({train_groups})"
        )
    return train_shards // train_groups


def train_group_members(group: int, train_shards: int, train_groups: int) -> list[str]:
    """Raw shard names of consolidated file `en_{group}`: shards group*G .. group*G+G-1 in numeric order."""
    size = group_size(train_shards, train_groups)
    if not 0 <= group < train_groups:
        raise PipelineInputError(f"train group {group} outside 0..{train_groups - 1} (config c4.train_groups)")
    return [raw_name("train", i, train_shards) for i in range(group * size, (group + 1) * size)]


def validation_members(validation_shards: int) -> list[str]:
    return [raw_name("validation", i, validation_shards) for i in range(validation_shards)]


def consolidated_train_name(group: int) -> str:
    return f"c4-train.en_{group}.json.gz"


def consolidated_validation_name(docs: int) -> str:
    return f"c4-validation-{docs}-samples.en.json.gz"


def check_raw_dir(raw_dir: str | Path, train_shards: int, validation_shards: int) -> None:
    """Refuse a raw folder whose C4 shards are not exactly the configured set (missing, extra or other totals)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise PipelineInputError(f"config c4.raw_dir: {raw_dir} is not a directory")
    expected = set(validation_members(validation_shards))
    expected.update(raw_name("train", i, train_shards) for i in range(train_shards))
    present = {p.name for p in raw_dir.iterdir() if _RAW_NAME.match(p.name)}
    missing, extra = sorted(expected - present), sorted(present - expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(str(raw_dir / m) for m in missing[:3])})")
    if extra:
        problems.append(
            f"{len(extra)} unexpected (e.g. {', '.join(str(raw_dir / m) for m in extra[:3])}); "
            f"config says c4.train_shards={train_shards}, c4.validation_shards={validation_shards}"
        )
    if problems:
        raise PipelineInputError(f"C4 shards in {raw_dir}: " + "; ".join(problems))
