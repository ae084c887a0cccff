"""The UltraChat SFT tokenizer: the base tokenizer plus the ChatML special tokens, as the DGXC hf-llama2 recipe sets up.

The recipe (pacman100/DHS-LLM-Workshop chat_assistant/sft/training/utils.py, spec §5.2) loads the tokenizer with
pad "<pad>", bos "<s>", eos "<|im_end|>" and additional special tokens "<|im_start|>user", "<|im_start|>assistant",
"<|im_start|>system", "<|im_end|>", "<s>", "<pad>"; tokens already in the vocabulary keep their ids, the others get
new ids after it in transformers' order (bos, eos, pad, then the additional ones; the model's embeddings are then
resized). The packed ids are only meaningful with this file, so the
workflow writes it next to the packed data.

CLI: python -m workflow_scripts.data.ultrachat_tokenizer --tokenizer T --output OUT/tokenizer.json [--no-add]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.tokenizer_files import load_tokenizer

log = logging.getLogger("ultrachat_tokenizer")
ROLES = ("user", "assistant", "system")
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# In the order transformers adds missing special tokens: bos, eos, pad, then additional_special_tokens.
CHATML_TOKENS = ["<s>", IM_END, "<pad>"] + [f"{IM_START}{role}" for role in ROLES]


def missing_tokens(tokenizer) -> list[str]:
    """ChatML tokens the tokenizer would not encode as one special id each."""
    missing = []
    for token in CHATML_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None or tokenizer.encode(token, add_special_tokens=False).ids != [token_id]:
            missing.append(token)
    return missing


def chatml_tokenizer(path: str | Path, add: bool = True):
    """The tokenizer with every ChatML token as a special token; with add=False it must already have them."""
    from tokenizers import AddedToken

    tokenizer = load_tokenizer(path)
    missing = missing_tokens(tokenizer)
    if missing and not add:
        raise PipelineInputError(
            f"tokenizer {path} lacks the ChatML special tokens {', '.join(missing)} (set ultrachat.add_chatml_tokens: true)"
        )
    if missing:
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    still = missing_tokens(tokenizer)
    if still:
        raise PipelineInputError(f"tokenizer {path}: cannot add the ChatML tokens {', '.join(still)} as single tokens")
    return tokenizer


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--no-add", action="store_true", help="require the tokens instead of adding them")
    args = parser.parse_args(argv)
    tokenizer = chatml_tokenizer(args.tokenizer, add=not args.no_add)
    with atomic_open(args.output, "w") as handle:
        handle.write(tokenizer.to_str())
    ids = {token: tokenizer.token_to_id(token) for token in CHATML_TOKENS}
    log.info("ChatML tokenizer (%d tokens, ids %s) -> %s", tokenizer.get_vocab_size(), json.dumps(ids), args.output)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
