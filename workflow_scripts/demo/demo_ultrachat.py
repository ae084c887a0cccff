"""A deterministic synthetic ultrachat_200k folder for the demo: the real file names and columns (`prompt`,
`prompt_id`, `messages` = list of {content, role}), 1-4 user/assistant turns, a few system messages, multi-line and
non-ASCII contents, some conversations longer than a packed chunk and a few with empty contents.

CLI: python -m workflow_scripts.demo.demo_ultrachat --out DIR --train-conversations 300 --test-conversations 60 --seed 1234
Writes DIR/{train_sft,train_gen}-00000-of-00001.parquet and DIR/{test_sft,test_gen}-00000-of-00001.parquet.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.cli import run_main

log = logging.getLogger("demo_ultrachat")
FILES = {  # file stem -> (split, index used in the seed)
    "train_sft-00000-of-00001": ("train", 0),
    "train_gen-00000-of-00001": ("train", 1),
    "test_sft-00000-of-00001": ("test", 2),
    "test_gen-00000-of-00001": ("test", 3),
}
_WORDS = (
    "the a of to and in is it you that for can this with be on are as your how what have more about which an "
    "use like make some time help would could these should also one will other example people write explain "
    "story recipe code data travel health music history science garden budget plan steps list idea tips "
    "first next then finally because however important simple good best new many different each"
).split()
_EXTRA = ["café", "naïve", "Zürich", "—", "…", "€", "東京", "😀", "1.5", "2024", "C++", "`x = 1`"]


class ConversationGenerator:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def _sentence(self) -> str:
        words = list(self.rng.choice(_WORDS, size=int(self.rng.integers(4, 16))))
        if self.rng.random() < 0.1:
            words.insert(int(self.rng.integers(0, len(words))), str(self.rng.choice(_EXTRA)))
        return " ".join(words).capitalize() + str(self.rng.choice([".", ".", "?", "!"]))

    def _content(self, long: bool) -> str:
        if self.rng.random() < 0.02:
            return ""
        n = int(self.rng.integers(40, 80)) if long else int(self.rng.integers(1, 8))
        lines = []
        for _ in range(n):
            lines.append(self._sentence())
            if self.rng.random() < 0.2:
                lines.append("\n")
        return " ".join(lines).replace(" \n ", "\n")

    def conversation(self) -> tuple[str, list[dict]]:
        long = self.rng.random() < 0.05
        messages = []
        if self.rng.random() < 0.05:
            messages.append({"content": self._content(False), "role": "system"})
        prompt = self._content(False) or "Hello?"
        messages.append({"content": prompt, "role": "user"})
        for turn in range(int(self.rng.integers(1, 5))):
            messages.append({"content": self._content(long), "role": "assistant"})
            if turn and self.rng.random() < 0.3:
                break
            messages.append({"content": self._content(False), "role": "user"})
        if messages[-1]["role"] == "user":
            messages.append({"content": self._content(long), "role": "assistant"})
        return prompt, messages


def write_file(path: Path, conversations: int, seed: int, index: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    generator = ConversationGenerator(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
    rows = [generator.conversation() for _ in range(conversations)]
    message = pa.struct([("content", pa.string()), ("role", pa.string())])
    table = pa.table(
        {
            "prompt": [p for p, _ in rows],
            "prompt_id": [hashlib.sha256(p.encode()).hexdigest() for p, _ in rows],
            "messages": pa.array([m for _, m in rows], type=pa.list_(message)),
        }
    )
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)


def generate(out: Path, train_conversations: int, test_conversations: int, seed: int) -> list[Path]:
    paths = []
    for stem, (split, index) in FILES.items():
        path = out / f"{stem}.parquet"
        write_file(path, train_conversations if split == "train" else test_conversations, seed, index)
        paths.append(path)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-conversations", type=int, required=True)
    parser.add_argument("--test-conversations", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    generate(args.out, args.train_conversations, args.test_conversations, args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
