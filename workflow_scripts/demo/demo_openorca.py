"""A deterministic stand-in for OpenOrca's `1M-GPT4-Augmented.parquet` (columns id, system_prompt, question, response).

Four origins (ids `cot.N`, `flan.N`, `niv.N`, `t0.N`), ordinary rows that every filter keeps, and planted rows that
exactly one filter removes (the first in reference order), so the per-filter counts are known in advance for any
byte-level tokenizer (every space-separated word is at least one token, every byte at most one):
- non_english: a non-ASCII character in the question, the response or the system prompt, and one row that is both
  non-English and too long (counted once, under non_english); rows with the allowed ’ – “ ” — are kept;
- input_too_long / output_too_long: a question / response of 1,100 words or more;
- short_output: a response of one character or none (tok_output = BOS + at most one token);
- bad_system_prompt: each bad system prompt once in niv and t0 (removed) and once in cot and flan (kept).
Ordinary rows stay under 1,000 bytes of prompt and of response (so under 1,024 tokens) and answer with 2 words or more.

CLI: python -m workflow_scripts.demo.demo_openorca --out 1M-GPT4-Augmented.parquet --rows-per-origin 150 --seed 1234
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.core.atomic import atomic_open, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.data.openorca_rules import BAD_PROMPT_ORIGINS, BAD_SYSTEM_PROMPTS, FILTERS, llama_prompt

log = logging.getLogger("demo_openorca")
ORIGINS = ("cot", "flan", "niv", "t0")
GOOD_SYSTEM_PROMPTS = (
    "You are a helpful assistant, who always provide explanation. Think like you are answering to a five year old.",
    "You are an AI assistant that helps people find information.",
    "You should describe the task and explain your answer.",
)
_SYLLABLES = "ka ri to ne sa mu lo vi de pa ten ber mon gal sid ro tu fe wil nor ash en ly ing ed er".split()
_NON_ASCII = ("café", "naïve", "Zürich", "北京", "😀", "…", "€5")
_ALLOWED = ("’", "–", "“", "”", "—")
LONG_WORDS = 1100
ORDINARY_LIMIT_BYTES = 1000


class _Text:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        words = {"".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4)))) for _ in range(3000)}
        self.words = np.array(sorted(words))

    def words_(self, n: int) -> str:
        return " ".join(self.rng.choice(self.words, size=n).tolist())

    def sentence(self, low: int, high: int) -> str:
        text = self.words_(int(self.rng.integers(low, high + 1)))
        return text[0].upper() + text[1:] + str(self.rng.choice([".", "?", "!"]))


# Every ordinary response is the same answer phrase, the question's first word and one free sentence: a pattern a
# tiny model can learn from the prompt (the demo base model trains on rows drawn the same way with another seed,
# demo_base_corpus.py), so the demo's ROUGE shows a working accuracy path. Random words alone would leave nothing to
# learn: every model scores ROUGE 0 on them.
ANSWER_PHRASE = "Sure. The answer to this question is"


def _ordinary(text: _Text, origin: str, rng: np.random.Generator) -> dict[str, str]:
    systems = GOOD_SYSTEM_PROMPTS if origin in BAD_PROMPT_ORIGINS else GOOD_SYSTEM_PROMPTS + ("",)
    system = str(rng.choice(systems))
    question = " ".join(text.sentence(3, 12) for _ in range(int(rng.integers(1, 5))))
    topic = question.split(" ", 1)[0].lower()
    return {"system_prompt": system, "question": question,
            "response": f"{ANSWER_PHRASE} {topic}. {text.sentence(2, 6)}"}


def ordinary_rows(rows_per_origin: int, seed: int) -> list[dict[str, str]]:
    """Ordinary rows only (every filter keeps them), drawn like those of the demo parquet: training text for the demo
    base model, from a seed of its own so that the evaluation samples are not among them."""
    rng = np.random.default_rng(seed)
    text = _Text(rng)
    return [{"id": f"{origin}.{i}", **_ordinary(text, origin, rng)} for origin in ORIGINS for i in range(rows_per_origin)]


def _planted(text: _Text, origin: str, rng: np.random.Generator) -> list[tuple[str | None, dict[str, str]]]:
    """(filter expected to remove the row or None, row) pairs for one origin."""
    rows: list[tuple[str | None, dict[str, str]]] = []

    def variant(**fields: str) -> dict[str, str]:
        return {**_ordinary(text, origin, rng), **fields}

    def word_with(extra: str) -> str:
        return f"{text.words_(3)} {extra}{text.words_(1)} {text.words_(3)}."

    for field in ("question", "response", "system_prompt"):
        rows.append(("non_english", variant(**{field: word_with(str(rng.choice(_NON_ASCII)))})))
    rows.append(("non_english", variant(question=text.words_(LONG_WORDS) + " café")))
    for char in _ALLOWED:
        rows.append((None, variant(response=word_with(char))))
    rows.append(("input_too_long", variant(question=text.words_(LONG_WORDS + int(rng.integers(0, 300))))))
    rows.append(("output_too_long", variant(response=text.words_(LONG_WORDS + int(rng.integers(0, 300))))))
    for answer in ("A", "7", ""):
        rows.append(("short_output", variant(response=answer)))
    removed_here = "bad_system_prompt" if origin in BAD_PROMPT_ORIGINS else None
    for prompt in BAD_SYSTEM_PROMPTS:
        rows.append((removed_here, variant(system_prompt=prompt)))
    return rows


def generate_rows(rows_per_origin: int, seed: int) -> tuple[list[dict[str, str]], dict]:
    """The rows (shuffled across origins) and the plan: rows, removals per filter, kept rows per origin."""
    rng = np.random.default_rng(seed)
    text = _Text(rng)
    labelled: list[tuple[str, str | None, dict[str, str]]] = []
    for origin in ORIGINS:
        for _ in range(rows_per_origin):
            row = _ordinary(text, origin, rng)
            size = max(len(llama_prompt(row["system_prompt"], row["question"]).encode()), len(row["response"].encode()))
            assert size < ORDINARY_LIMIT_BYTES, "ordinary demo rows must stay far below the token limit"
            labelled.append((origin, None, row))
        labelled.extend((origin, removed, row) for removed, row in _planted(text, origin, rng))
    order = rng.permutation(len(labelled))
    rows, removed = [], dict.fromkeys(FILTERS, 0)
    kept_per_origin = dict.fromkeys(ORIGINS, 0)
    counters = dict.fromkeys(ORIGINS, 0)
    for k in order:
        origin, removal, row = labelled[k]
        rows.append({"id": f"{origin}.{counters[origin]}", **row})
        counters[origin] += 1
        if removal:
            removed[removal] += 1
        else:
            kept_per_origin[origin] += 1
    plan = {"rows": len(rows), "removed": removed, "kept_per_origin": kept_per_origin}
    return rows, plan


def write_demo_parquet(path: Path, rows_per_origin: int, seed: int) -> dict:
    """Write the parquet (and `<path>.plan.json` with the expected filter counts); returns the plan."""
    rows, plan = generate_rows(rows_per_origin, seed)
    columns = ("id", "system_prompt", "question", "response")
    table = pa.table({name: pa.array([row[name] for row in rows], type=pa.string()) for name in columns})
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)
    write_json(f"{path}.plan.json", plan)
    return plan


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows-per-origin", type=int, required=True, help="ordinary rows per origin (planted rows extra)")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    plan = write_demo_parquet(args.out, args.rows_per_origin, args.seed)
    log.info("wrote %d rows to %s; expected removals %s", plan["rows"], args.out, plan["removed"])


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
