"""Train the demo BPE tokenizer (a stand-in for the Mixtral / Llama tokenizers) on the demo C4 train shards.

Byte-level BPE, so every string (non-ASCII included) encodes without <unk>; Llama-style special tokens.
CLI: python -m workflow_scripts.demo.demo_tokenizer --out tokenizer.json --vocab-size 2048 SHARD.json.gz...
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
from pathlib import Path
from typing import Iterator, Sequence

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.cli import run_main

log = logging.getLogger("demo_tokenizer")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def _texts(shards: Sequence[Path]) -> Iterator[str]:
    for shard in shards:
        with gzip.open(shard, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)["text"]


def train_tokenizer(shards: Sequence[Path], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_texts(shards), trainer=trainer)
    return tokenizer


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("shards", type=Path, nargs="+")
    args = parser.parse_args(argv)
    tokenizer = train_tokenizer(args.shards, args.vocab_size)
    with atomic_open(args.out, "w") as handle:
        handle.write(tokenizer.to_str())
    log.info("trained BPE tokenizer with %d tokens -> %s", tokenizer.get_vocab_size(), args.out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
