"""A deterministic synthetic C4 corpus for the demo and the tests: real file names and fields (`text`, `timestamp`,
`url`), English-like text with a Zipf word-frequency law, some long documents, some empty, some non-ASCII.

All shards share one language (vocabulary and phrase templates, from the corpus seed). Most sentences follow the
language's templates, the rest are Zipf word salad: text with structure a small model can learn, so that the demo's
pretraining reaches the MLPerf llama31_8b target (log perplexity 3.3) in minutes on a CPU; i.i.d. Zipf words alone
have a floor near 5 nats per token.

CLI: python -m workflow_scripts.demo.demo_c4_corpus --out DIR --train-shards 16 --validation-shards 8
                                              --train-docs 120 --validation-docs 100 --seed 1234
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.data.c4_layout import raw_name
from workflow_scripts.core.cli import run_main

log = logging.getLogger("demo_c4_corpus")

_COMMON = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no what can more about up out them some time "
    "could into only other new these two may first then do any like my now over such our man me even most made after "
    "also did many before must through back years where much your way well down should because each just those people"
).split()
_SYLLABLES = "ka ri to ne sa mu lo vi de pa ten ber mon gal sid ro tu fe wil nor ash en ly ing ed er".split()
_NON_ASCII = ["café", "naïve", "über", "Zürich", "déjà vu", "São Paulo", "Ελλάδα", "北京", "東京", "😀", "—", "…", "€5"]
_TLDS = ["com", "org", "net", "co.uk", "de", "io"]


def _vocabulary(rng: np.random.Generator, size: int = 6000) -> list[str]:
    """The common English words, then new words of 1-3 syllables in the order drawn (drawn in bulk: one word at a
    time made this most of the corpus's generation time)."""
    words = list(_COMMON)
    seen = set(words)
    while len(words) < size:
        lengths = rng.integers(1, 4, size=4096)
        syllables = rng.choice(np.array(_SYLLABLES), size=(4096, 3))
        for length, row in zip(lengths.tolist(), syllables.tolist()):
            word = "".join(row[:length])
            if word not in seen and len(words) < size:
                seen.add(word)
                words.append(word)
    return words


# Phrase templates of the language, the slot choices of each, and the share of sentences that follow a template.
TEMPLATES, SLOT_CHOICES, TEMPLATE_SHARE = 64, 6, 0.9


class Language:
    """The corpus's words (Zipf-weighted) and phrase templates (word sequences with slots), from one seed."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.words = np.array(_vocabulary(rng))
        ranks = np.arange(1, len(self.words) + 1)
        weights = 1.0 / ranks**1.1  # Zipf's law, close to English
        self.cdf = np.cumsum(weights / weights.sum())
        self.templates = [self.draw(rng, int(rng.integers(5, 13))) for _ in range(TEMPLATES)]
        # Per template: the slot positions, and for each slot its few alternative words.
        self.slots = [{int(pos): self.draw(rng, SLOT_CHOICES) for pos in rng.choice(len(t), size=2, replace=False)}
                      for t in self.templates]

    def draw(self, rng: np.random.Generator, n_words: int) -> list[str]:
        idx = np.minimum(np.searchsorted(self.cdf, rng.random(n_words)), len(self.words) - 1)
        return self.words[idx].tolist()


class DocumentGenerator:
    """Documents of `language` drawn from one seeded generator; the same seeds give the same corpus byte for byte."""

    def __init__(self, seed: int, language: Language | None = None):
        self.rng = np.random.default_rng(seed)
        self.language = language or Language(seed)

    def _words(self, n_words: int) -> list[str]:
        if self.rng.random() >= TEMPLATE_SHARE:
            return self.language.draw(self.rng, n_words)
        k = int(self.rng.integers(len(self.language.templates)))
        words = list(self.language.templates[k])
        for pos, choices in self.language.slots[k].items():
            words[pos] = choices[int(self.rng.integers(len(choices)))]
        return words

    def _sentence(self, n_words: int) -> str:
        words = self._words(n_words)
        words[0] = words[0].capitalize()
        if self.rng.random() < 0.08:
            words.insert(int(self.rng.integers(0, len(words))), str(self.rng.choice(_NON_ASCII)))
        if self.rng.random() < 0.1:
            words.insert(int(self.rng.integers(0, len(words))), str(int(self.rng.integers(1, 2030))))
        return " ".join(words) + str(self.rng.choice([".", ".", ".", "!", "?"]))

    def text(self) -> str:
        roll = self.rng.random()
        if roll < 0.02:
            return ""  # empty documents exist in the wild and must be skipped by tokenization
        if roll < 0.05:
            n_words = int(self.rng.integers(2000, 6000))  # long documents
        else:
            n_words = int(np.clip(self.rng.lognormal(5.3, 0.8), 5, 3000))
        sentences, paragraph = [], []
        while n_words > 0:
            length = int(min(n_words, self.rng.integers(4, 30)))
            paragraph.append(self._sentence(length))
            n_words -= length
            if self.rng.random() < 0.15:
                sentences.append(" ".join(paragraph))
                paragraph = []
        if paragraph:
            sentences.append(" ".join(paragraph))
        return "\n".join(sentences)

    def document(self, index: int) -> dict[str, str]:
        day = int(self.rng.integers(0, 365 * 3))
        second = int(self.rng.integers(0, 86400))
        year, yday = 2019 + day // 365, day % 365
        month, mday = 1 + yday // 31 % 12, 1 + yday % 28
        host = "".join(self.rng.choice(_SYLLABLES, size=2)) + "." + str(self.rng.choice(_TLDS))
        return {
            "text": self.text(),
            "timestamp": f"{year}-{month:02d}-{mday:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z",
            "url": f"https://www.{host}/page/{index}",
        }


def write_shard(path: Path, generator: DocumentGenerator, docs: int, first_index: int) -> None:
    with atomic_open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        for i in range(docs):
            line = json.dumps(generator.document(first_index + i), ensure_ascii=False) + "\n"
            out.write(line.encode("utf-8"))


def generate_corpus(out: Path, train_shards: int, validation_shards: int, train_docs: int, validation_docs: int,
                    seed: int) -> list[Path]:
    """Write every shard; each shard has its own seed so shards are independent of the shard count."""
    language = Language(seed)
    written = []
    for split, shards, docs, offset in (("train", train_shards, train_docs, 0),
                                        ("validation", validation_shards, validation_docs, 10**6)):
        for i in range(shards):
            path = out / raw_name(split, i, shards)
            write_shard(path, DocumentGenerator(seed * 100_003 + offset + i, language), docs, (offset + i) * docs)
            written.append(path)
        log.info("wrote %d %s shards of %d documents to %s", shards, split, docs, out)
    return written


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-shards", type=int, required=True)
    parser.add_argument("--validation-shards", type=int, required=True)
    parser.add_argument("--train-docs", type=int, required=True, help="documents per train shard")
    parser.add_argument("--validation-docs", type=int, required=True, help="documents per validation shard")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    generate_corpus(args.out, args.train_shards, args.validation_shards, args.train_docs, args.validation_docs, args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
