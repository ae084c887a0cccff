"""UltraChat packing against a plain re-implementation of the recipe (transformers chat template + TRL 0.8.2 loop)."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflow_scripts.demo import demo_ultrachat

from workflow_scripts.data import ultrachat_pack

from workflow_scripts.data import ultrachat_tokenizer
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.packed_parquet import read_packed

SEQ, CHARS_PER_TOKEN, SEQUENCES, SEED = 64, 3.6, 4, 100
# The recipe's ChatML template and special tokens (DHS-LLM-Workshop chat_assistant/sft/training/utils.py).
TEMPLATE = (
    "{% for message in messages %}\n{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% if loop.last and add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}{% endfor %}"
)
SPECIAL = ["<|im_start|>user", "<|im_start|>assistant", "<|im_start|>system", "<|im_end|>", "<s>", "<pad>"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_tokenizer_path):
    out = tmp_path_factory.mktemp("ultrachat")
    demo_ultrachat.generate(out / "data", 40, 10, seed=3)
    tokenizer = ultrachat_tokenizer.chatml_tokenizer(demo_tokenizer_path)
    (out / "tokenizer.json").write_text(tokenizer.to_str())
    return out


def _reference_rows(files, base_tokenizer_path):
    """SFTTrainer(packing=True) as the recipe runs it, written out plainly from TRL 0.8.2's ConstantLengthDataset."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(base_tokenizer_path), pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL,
    )
    tok.chat_template = TEMPLATE
    texts = [tok.apply_chat_template(m, tokenize=False)
             for f in files for m in pq.read_table(f).column("messages").to_pylist()]
    random.seed(SEED)
    rows, iterator, more = [], iter(texts), True
    while more:
        buffer, buffer_len = [], 0
        while True:
            if buffer_len >= SEQ * CHARS_PER_TOKEN * SEQUENCES:
                break
            try:
                buffer.append(next(iterator))
                buffer_len += len(buffer[-1])
            except StopIteration:
                more = False
                break
        all_ids = []
        for ids in (tok(buffer, add_special_tokens=False, truncation=False)["input_ids"] if buffer else []):
            all_ids.extend(ids)
        examples = [all_ids[i : i + SEQ] for i in range(0, len(all_ids), SEQ) if len(all_ids[i : i + SEQ]) == SEQ]
        random.shuffle(examples)
        rows.extend(examples)
    return rows


def test_packing_equals_trl_reimplementation(tmp_path, demo, demo_tokenizer_path):
    files = sorted((demo / "data").glob("train_*.parquet"))
    stats = ultrachat_pack.pack_split(
        files, demo / "tokenizer.json", tmp_path / "train.parquet", tmp_path / "train.stats.json",
        seq_length=SEQ, chars_per_token=CHARS_PER_TOKEN, num_of_sequences=SEQUENCES, seed=SEED,
    )
    ids, labels = read_packed(tmp_path / "train.parquet")
    want = _reference_rows(files, demo_tokenizer_path)
    assert stats["buffers"] > 3 and stats["dropped_tokens"] > 0  # several buffers, each dropping a remainder
    assert ids.tolist() == want
    assert np.array_equal(labels, ids)
    assert stats["rows"] == len(want) and stats["tokens_in"] == stats["tokens_packed"] + stats["dropped_tokens"]
    assert json.loads((tmp_path / "train.stats.json").read_text())["conversations"] == 80


def test_unshuffled_stream_is_the_tokenized_conversations(tmp_path, demo):
    files = sorted((demo / "data").glob("test_*.parquet"))
    ultrachat_pack.pack_split(files, demo / "tokenizer.json", tmp_path / "t.parquet", tmp_path / "t.json",
                              seq_length=SEQ, num_of_sequences=10_000, shuffle=False)  # one buffer
    tokenizer = ultrachat_tokenizer.chatml_tokenizer(demo / "tokenizer.json", add=False)
    stream = [t for text in ultrachat_pack.iter_texts(files)
              for t in tokenizer.encode(text, add_special_tokens=False).ids]
    ids, _ = read_packed(tmp_path / "t.parquet")
    assert ids.reshape(-1).tolist() == stream[: ids.size] and len(stream) - ids.size < SEQ
    assert tokenizer.token_to_id("<|im_start|>assistant") in stream


def test_chatml_tokens_get_transformers_ids(demo, demo_tokenizer_path):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(demo_tokenizer_path), pad_token="<pad>", bos_token="<s>",
                                  eos_token="<|im_end|>", additional_special_tokens=SPECIAL)
    ours = ultrachat_tokenizer.chatml_tokenizer(demo_tokenizer_path)
    assert {t: ours.token_to_id(t) for t in SPECIAL} == {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}


def test_tokenizer_without_chatml_tokens_is_refused(tmp_path, demo, demo_tokenizer_path):
    with pytest.raises(PipelineInputError, match=r"lacks the ChatML special tokens .*<\|im_end\|>"):
        ultrachat_tokenizer.chatml_tokenizer(demo_tokenizer_path, add=False)
    files = sorted((demo / "data").glob("test_*.parquet"))
    with pytest.raises(PipelineInputError, match="lacks the ChatML special tokens"):
        ultrachat_pack.pack_split(files, demo_tokenizer_path, tmp_path / "t.parquet", tmp_path / "t.json", seq_length=SEQ)
    assert not list(tmp_path.iterdir())


def _messages_table(conversations):
    message = pa.struct([("content", pa.string()), ("role", pa.string())])
    return pa.table({"prompt": ["p"] * len(conversations), "messages": pa.array(conversations, pa.list_(message))})


@pytest.mark.parametrize(
    "table,message",
    [
        (pa.table({"prompt": ["p"], "text": ["t"]}), r"bad.parquet: missing column 'messages'"),
        (_messages_table([[{"content": "a", "role": "user"}], [{"content": None, "role": "user"}]]),
         r"bad.parquet: row 2: column 'messages'\[0\].content is null, not a string"),
        (_messages_table([[{"content": "a", "role": "user"}], None]), r"bad.parquet: row 2: column 'messages' is null"),
        (pa.table({"messages": pa.array([[{"content": 1, "role": "user"}]])}),
         r"row 1: column 'messages'\[0\].content is int, not a string"),
        (_messages_table([]), r"bad.parquet: empty file"),
    ],
)
def test_bad_input_names_file_row_and_field(tmp_path, demo, table, message):
    src = tmp_path / "bad.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out"
    with pytest.raises(PipelineInputError, match=message):
        ultrachat_pack.pack_split([src], demo / "tokenizer.json", out / "t.parquet", out / "t.json", seq_length=SEQ)
    code = ultrachat_pack.main(["--tokenizer", str(demo / "tokenizer.json"), "--output", str(out / "t.parquet"),
                                "--stats", str(out / "t.json"), "--seq-length", str(SEQ), "--chars-per-token", "3.6",
                                "--num-of-sequences", "1024", "--seed", "100", "--threads", str(os.cpu_count()),
                                str(src)])
    assert code == 2
    assert not out.exists() or not any(out.iterdir())
