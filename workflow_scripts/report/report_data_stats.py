"""One table of data statistics over the prepared data sets (documents, tokens, packing efficiency), read from the
stats JSONs the data rules write. Packing efficiency = tokens that land in training rows / tokens before packing (the
rest is dropped remainders); it is empty where nothing is packed (C4 is concatenated by Megatron, OpenOrca is not
packed) or where the packing step did not run here (GovReport from the published packed parquet)."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

from workflow_scripts.report.report_inputs import read_json


@dataclass(frozen=True)
class DataRow:
    dataset: str
    split: str
    documents: int | None
    rows: int | None
    tokens: int
    packing_efficiency: float | None


def c4_row(path: Path | str) -> DataRow:
    stats = read_json(path, ("documents", "tokens"))
    # results/c4/tokenized/c4-train.en_3_text_document.stats.json -> split "train.en_3"
    name = re.sub(r"_text_document\.stats\.json$", "", Path(path).name).removeprefix("c4-")
    return DataRow("c4", name, int(stats["documents"]), None, int(stats["tokens"]), None)


def govreport_row(split: str, path: Path | str, packed: Path | str | None) -> DataRow:
    stats = read_json(path, ("rows", "tokens"))
    documents = efficiency = None
    if packed is not None:
        pack = read_json(packed, ("kept_examples", "tokens", "dropped_remainder_tokens"))
        documents = int(pack["kept_examples"])
        efficiency = _ratio(pack["tokens"], pack["tokens"] + pack["dropped_remainder_tokens"])
    return DataRow("govreport", split, documents, int(stats["rows"]), int(stats["tokens"]), efficiency)


def ultrachat_row(split: str, path: Path | str) -> DataRow:
    stats = read_json(path, ("conversations", "rows", "tokens_in", "tokens_packed"))
    return DataRow("ultrachat", split, int(stats["conversations"]), int(stats["rows"]), int(stats["tokens_packed"]),
                   _ratio(stats["tokens_packed"], stats["tokens_in"]))


def openorca_row(path: Path | str) -> DataRow:
    """Tokens from the sampled rows' mean lengths (the stats keep means, rounded to 3 decimals: exact to < 1 token
    for up to ~500 rows, approximate beyond)."""
    stats = read_json(path, ("sampled", "tok_input_length_mean", "tok_output_length_mean"))
    sampled = int(stats["sampled"])
    tokens = round(sampled * (stats["tok_input_length_mean"] + stats["tok_output_length_mean"]))
    return DataRow("openorca", "sampled", sampled, sampled, tokens, None)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def collect(c4: Sequence[str], govreport: Sequence[str], govreport_packed: Sequence[str], ultrachat: Sequence[str],
            openorca: Sequence[str]) -> list[DataRow]:
    """Splits of GovReport and UltraChat are named by their stats file (train.stats.json -> train)."""
    packed = {_split_of(p): p for p in govreport_packed}
    rows = [c4_row(p) for p in sorted(c4)]
    rows += [govreport_row(_split_of(p), p, packed.get(_split_of(p))) for p in govreport]
    rows += [ultrachat_row(_split_of(p), p) for p in ultrachat]
    rows += [openorca_row(p) for p in openorca]
    return rows


def _split_of(path: str | Path) -> str:
    return Path(path).name.removesuffix(".stats.json")


def to_csv(rows: Sequence[DataRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, [f.name for f in fields(DataRow)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return out.getvalue()
