"""Deterministic synthetic GovReport rows (`id`, `pid`, `input`, `output`, as tau/scrolls gov_report) for the demo.

The summary is a fixed template whose five slots (agency, topic, fiscal year, finding, recommendation) are stated
verbatim in the report, each drawn uniformly from a small list (12, 16, 13, 10 and 10 values): a model that learns the
template and copies the slots predicts every summary token; one that learns only the template and guesses the slots
pays about 12 nats per summary of ~30 words (~120 demo-tokenizer tokens), i.e. ~0.1 nats per loss token, far under
the MLPerf eval-loss target of 0.925. The rest of the report is Zipf-distributed filler (masked out of the validation
loss). About 3% of the reports are long, so the "longer than seq_length" filter has something to drop at the demo's
sequence length (512).

The validation split is drawn until it packs into exactly 173 rows (as the real one) with the given tokenizer and
pack settings, so the demo's eval set has the real eval set's size whatever the demo tokenizer is.

CLI: python -m workflow_scripts.demo.demo_govreport --out DIR --tokenizer T --train-docs 2000 --validation-rows 173
        --seq-length 512 --num-proc 2 --batch-size 1000 --seed 1234
Writes DIR/train.parquet and DIR/validation.parquet.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.govreport_pack import full_text, map_batches
from workflow_scripts.data.tokenizer_files import load_tokenizer, special_token_id

log = logging.getLogger("demo_govreport")

AGENCIES = [
    "Department of Defense", "Internal Revenue Service", "Federal Aviation Administration",
    "Department of Veterans Affairs", "Environmental Protection Agency", "Social Security Administration",
    "Department of Energy", "Small Business Administration", "Department of Homeland Security",
    "Food and Drug Administration", "Department of Education", "National Park Service",
]
TOPICS = [
    "contract oversight", "cybersecurity controls", "grant management", "improper payments", "workforce planning",
    "disaster assistance", "fleet maintenance", "data reliability", "acquisition costs", "loan programs",
    "facility security", "benefit processing", "IT modernization", "emergency preparedness", "program evaluation",
    "financial reporting",
]
YEARS = [str(y) for y in range(2010, 2023)]
FINDINGS = [
    "costs grew faster than planned", "staff did not follow written procedures", "key data were incomplete",
    "oversight was limited", "goals lacked clear measures", "training was not tracked", "risks were not assessed",
    "payments were not verified", "schedules slipped repeatedly", "reviews were not documented",
]
RECOMMENDATIONS = [
    "improve its guidance", "track results more closely", "assess risks annually", "update its policies",
    "verify payment data", "set measurable goals", "document its reviews", "train its staff",
    "strengthen internal controls", "report progress to Congress",
]
_FILLER = (
    "the of and to in that for is on agency program officials federal data report review funds costs as with by "
    "were was are this which plan oversight process staff management guidance fiscal year years contracts "
    "agencies systems information reported stated according to also more than percent million billion total "
    "our analysis interviews documents policies requirements performance goals risks controls law Congress "
    "states local new other these its their we found not has have been be or an at from would could may"
).split()


def summary_text(agency: str, topic: str, year: str, finding: str, recommendation: str) -> str:
    return (
        f"GAO reviewed {topic} at the {agency} for fiscal year {year}. "
        f"GAO found that {finding} and recommends that the {agency} {recommendation}."
    )


class ReportGenerator:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        ranks = np.arange(1, len(_FILLER) + 1)
        weights = 1.0 / ranks
        self.cdf = np.cumsum(weights / weights.sum())

    def _filler(self, n_words: int) -> str:
        idx = np.minimum(np.searchsorted(self.cdf, self.rng.random(n_words)), len(_FILLER) - 1)
        words = [_FILLER[i] for i in idx]
        words[0] = words[0].capitalize()
        return " ".join(words) + "."

    def _paragraph(self, n_words: int) -> str:
        sentences = []
        while n_words > 0:
            length = int(min(n_words, self.rng.integers(6, 20)))
            sentences.append(self._filler(length))
            n_words -= length
        return " ".join(sentences)

    def row(self) -> tuple[str, str]:
        pick = self.rng.integers
        agency, topic = AGENCIES[pick(len(AGENCIES))], TOPICS[pick(len(TOPICS))]
        year, finding = YEARS[pick(len(YEARS))], FINDINGS[pick(len(FINDINGS))]
        recommendation = RECOMMENDATIONS[pick(len(RECOMMENDATIONS))]
        long_report = self.rng.random() < 0.03
        n_words = int(pick(200, 300)) if long_report else int(np.clip(self.rng.lognormal(3.9, 0.35), 20, 100))
        body = [self._paragraph(max(6, n_words // 3)) for _ in range(3)]
        report = "\n".join([
            f"This report examines {topic} at the {agency} during fiscal year {year}. {body[0]}",
            f"Our review found that {finding}. {body[1]}",
            f"{body[2]} We recommend that the {agency} {recommendation}.",
        ])
        return report, summary_text(agency, topic, year, finding, recommendation)


def _write(path: Path, rows: list[tuple[str, str]], split_index: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"demo-{split_index}-{i:06d}" for i in range(len(rows))]
    table = pa.table({"id": ids, "pid": ids, "input": [r for r, _ in rows], "output": [s for _, s in rows]})
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)


def _generator(seed: int, split_index: int) -> ReportGenerator:
    return ReportGenerator(int(np.random.SeedSequence([seed, split_index]).generate_state(1)[0]))


def packed_rows(lengths: Sequence[int], seq_length: int, num_proc: int, batch_size: int | None) -> int:
    """Rows that govreport_pack makes from examples of these token lengths (same filter, same map batches)."""
    kept = [n for n in lengths if n <= seq_length]
    return sum(sum(kept[s:e]) // seq_length for s, e in map_batches(len(kept), num_proc, batch_size))


def rows_for_target(
    generator: ReportGenerator, token_length: Callable[[str, str], int], target_rows: int,
    seq_length: int, num_proc: int, batch_size: int | None, max_stalled: int = 500,
) -> list[tuple[str, str]]:
    """Draw reports until packing gives exactly `target_rows` rows (173, as the real validation split).

    Adding one report can add two rows at once (two map shards), so a report that would overshoot is skipped.
    """
    rows: list[tuple[str, str]] = []
    lengths: list[int] = []
    current = 0
    stalled = 0  # candidates in a row that changed nothing or overshot
    while current != target_rows:
        if stalled == max_stalled:
            raise PipelineInputError(
                f"demo.govreport_validation_rows: stuck at {current} of {target_rows} packed rows after {max_stalled} "
                f"reports that did not fit (is govreport.seq_length {seq_length} too short for the demo reports?)"
            )
        row = generator.row()
        length = token_length(*row)
        after = packed_rows(lengths + [length], seq_length, num_proc, batch_size)
        stalled = stalled + 1 if after == current or after > target_rows else 0
        if after <= target_rows:
            rows.append(row)
            lengths.append(length)
            current = after
    return rows


def generate(
    out: Path, train_docs: int, validation_rows: int, seed: int, tokenizer_path: Path, *,
    seq_length: int, num_proc: int, batch_size: int | None, bos_token: str = "<s>", eos_token: str = "</s>",
) -> None:
    tokenizer = load_tokenizer(tokenizer_path)
    special_token_id(tokenizer, bos_token, "govreport.bos_token")

    def token_length(report: str, summary: str) -> int:
        return 1 + len(tokenizer.encode(full_text(report, summary, eos_token), add_special_tokens=False).ids)

    generator = _generator(seed, 0)
    _write(out / "train.parquet", [generator.row() for _ in range(train_docs)], 0)
    validation = rows_for_target(_generator(seed, 1), token_length, validation_rows, seq_length, num_proc, batch_size)
    _write(out / "validation.parquet", validation, 1)
    log.info("train: %d reports; validation: %d reports (%d packed rows) -> %s", train_docs, len(validation),
             validation_rows, out)


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--train-docs", type=int, required=True)
    parser.add_argument("--validation-rows", type=int, required=True)
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--num-proc", type=int, required=True, help="govreport_pack's --num-proc for validation")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--bos-token", required=True)
    parser.add_argument("--eos-token", required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    generate(
        args.out, args.train_docs, args.validation_rows, args.seed, args.tokenizer, seq_length=args.seq_length,
        num_proc=args.num_proc, batch_size=args.batch_size, bos_token=args.bos_token, eos_token=args.eos_token,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
