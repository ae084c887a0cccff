"""Tokenization exactly as processorca.py gets it from `LlamaTokenizerFast(text)["input_ids"]`.

The reference tokenizes with special tokens on, so the Llama post-processor puts a BOS in front of every text, and the
literal `<s>` that starts the prompt is an added token that maps to the same id: `tok_input` starts with two BOS ids
([1, 1, 518, 25580, ...] in the published pickle) and `tok_output` with one. Here the BOS is prepended explicitly and
the text is encoded without the tokenizer's own post-processor, which gives the same ids for the Llama 2 tokenizer.json
of the hub (its Prepend("▁") normalizer, as transformers 4.31 loads it) and also gives the demo tokenizer (which has no
post-processor) the reference's BOS handling. `tok_input` then gets the
"response init" token (id 29871, Llama's "▁") appended for the first-token cheat check.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.tokenizer_files import load_tokenizer, special_token_id


class OrcaTokenizer:
    def __init__(self, path: str | Path, bos_token: str = "<s>", response_init_token: str = "▁"):
        self.tokenizer = load_tokenizer(path)
        self.bos_id = special_token_id(self.tokenizer, bos_token, "openorca.bos_token (BOS of every tokenized text)")
        self.response_init_id = special_token_id(
            self.tokenizer, response_init_token, "openorca.response_init_token (appended to every tok_input)"
        )
        # The prompt's literal BOS text must be one added token, as `<s>` is for Llama (that is the double BOS).
        if self.tokenizer.encode(bos_token, add_special_tokens=False).ids != [self.bos_id]:
            raise PipelineInputError(
                f"tokenizer: the text {bos_token!r} (openorca.bos_token) does not encode to its own id; "
                "it must be an added special token as in the Llama 2 tokenizer"
            )
        # encode_batch_fast skips offset tracking; ids are the same as encode_batch.
        self._encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def encode_inputs(self, texts: Sequence[str]) -> list[list[int]]:
        bos, tail = [self.bos_id], [self.response_init_id]
        return [bos + enc.ids + tail for enc in self._encode(list(texts), add_special_tokens=False)]

    def encode_outputs(self, texts: Sequence[str]) -> list[list[int]]:
        bos = [self.bos_id]
        return [bos + enc.ids for enc in self._encode(list(texts), add_special_tokens=False)]

