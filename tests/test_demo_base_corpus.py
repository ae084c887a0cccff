"""The demo base model's training text: GovReport rows plus chat examples in the accuracy run's token layout."""
from __future__ import annotations

import numpy as np
import pytest

from workflow_scripts.demo.demo_base_corpus import build, chat_examples, pack_whole
from workflow_scripts.demo.demo_openorca import ANSWER_PHRASE, generate_rows, ordinary_rows
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.openorca_rules import llama_prompt
from workflow_scripts.data.openorca_tokens import OrcaTokenizer


def test_demo_responses_follow_a_pattern_the_prompt_determines():
    rows = ordinary_rows(5, seed=3)
    assert len(rows) == 20
    for row in rows:
        first_word = row["question"].split(" ", 1)[0].lower()
        assert row["response"].startswith(f"{ANSWER_PHRASE} {first_word}. ")
    questions = {r["question"] for r in rows}
    demo_parquet_rows, _ = generate_rows(150, seed=2)  # the evaluation set is drawn from another seed
    assert not questions & {r["question"] for r in demo_parquet_rows}


def test_whole_examples_are_packed_and_the_padding_is_masked():
    ids, mask = pack_whole([[1, 2, 3], [4, 5], [6, 7, 8, 9]], seq_length=5, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    with pytest.raises(PipelineInputError, match="exceeds seq_length 5"):
        pack_whole([[1] * 6], seq_length=5, pad_id=0)


def test_chat_examples_are_the_filters_tok_input_then_the_response_and_eos(demo_tokenizer_path):
    tokenizer = OrcaTokenizer(demo_tokenizer_path, "<s>", "Ġ")
    eos = tokenizer.tokenizer.token_to_id("</s>")
    row = ordinary_rows(1, seed=5)[0]
    example = chat_examples(tokenizer, eos, 1, seed=5)[0]
    tok_input = tokenizer.encode_inputs([llama_prompt(row["system_prompt"], row["question"])])[0]
    tok_output = tokenizer.encode_outputs([row["response"]])[0]
    assert example == tok_input + tok_output[1:] + [eos]  # one BOS pair at the start, as generation sees it


def test_build_keeps_the_first_govreport_rows_and_appends_the_chat_rows(demo_tokenizer_path, tmp_path):
    seq = 256
    base = np.empty(5, dtype=object)
    base[:] = [{"input_ids": np.full(seq, i, dtype=np.int32), "loss_mask": [1] * seq, "seq_start_id": [0]}
               for i in range(5)]
    np.save(tmp_path / "train.npy", base, allow_pickle=True)
    stats = build(tmp_path / "train.npy", demo_tokenizer_path, tmp_path / "out.npy", tmp_path / "stats.json",
                  govreport_rows=3, rows_per_origin=4, seed=1, bos_token="<s>", eos_token="</s>",
                  response_init_token="Ġ")
    rows = np.load(tmp_path / "out.npy", allow_pickle=True)
    assert [int(r["input_ids"][0]) for r in rows[:3]] == [0, 1, 2]
    assert stats["govreport_rows"] == 3 and stats["chat_examples"] == 16 and len(rows) == 3 + stats["chat_rows"]
    assert all(len(r["input_ids"]) == seq and len(r["loss_mask"]) == seq for r in rows)
    assert sum(sum(r["loss_mask"]) for r in rows[3:]) == stats["chat_tokens"]
