"""The OpenOrca stage against an independent whole-frame pandas replica of processorca.py.

The replica tokenizes through `transformers` (`tokenizer(text)["input_ids"]`, as the reference does with
LlamaTokenizerFast) with a BOS post-processor like Llama's, so it also checks the double-BOS handling; its prompt
templates and bad system prompts are typed here from the spec (mlperf-spec.md §4.1), not imported.
"""
from __future__ import annotations

import pandas as pd
import pytest

from workflow_scripts.demo.demo_openorca import write_demo_parquet
from workflow_scripts.data.openorca_filter import filter_parquet
from workflow_scripts.data.openorca_sample import sample_dataset

BAD = [
    "",
    "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
    "You are an AI assistant. Provide a detailed answer so user don’t need to search outside to understand the answer.",
    "You are an AI assistant. Provide a detailed answer so user don't need to search outside to understand the answer.",
    "User will you give you a task with some instruction. Your job is follow the instructions as faithfully as you can. "
    "While answering think step-by-step and justify your answer.",
    "Explain how you used the definition to come up with the answer.",
]
TOTAL, CALIBRATION = 120, 20


def _hf_tokenizer(path):
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _replica(parquet, hf, init_id):
    df = pd.read_parquet(parquet).rename(columns={"response": "output"})

    def prompt(row):
        if row["system_prompt"]:
            return f"<s>[INST] <<SYS>>\n{row['system_prompt']}\n<</SYS>>\n\n{row['question']} [/INST]"
        return f"<s>[INST] {row['question']} [/INST]"

    def english(text):
        return all(c.isascii() or c in "’–“”—" for c in text)

    df["input"] = df.apply(prompt, axis=1)
    df["tok_input"] = df["input"].apply(lambda x: hf(x)["input_ids"] + [init_id])
    df["tok_output"] = df["output"].apply(lambda x: hf(x)["input_ids"])
    df["origin"] = df["id"].apply(lambda x: x.split(".")[0])
    df = df[df["input"].apply(english) & df["output"].apply(english)].reset_index(drop=True)
    df["tok_input_length"] = df["tok_input"].apply(len)
    df["tok_output_length"] = df["tok_output"].apply(len)
    df = df[(df["tok_input_length"] < 1024) & (df["tok_output_length"] < 1024)].reset_index(drop=True)
    df = df[df["tok_output_length"] >= 3].reset_index(drop=True)
    for bad in BAD:
        df = df[~((df["system_prompt"] == bad) & df["origin"].isin(["niv", "t0"]))]
    full = df.reset_index(drop=True)
    groups = dict(tuple(full.groupby("origin")))
    sampled = pd.concat(
        [g.reset_index(drop=True).sample(n=TOTAL // len(groups), random_state=1337) for g in groups.values()]
    ).reset_index(drop=True)
    calibration = sampled.sample(n=CALIBRATION, random_state=12345).reset_index(drop=True)
    return full, sampled, calibration


def _same(ours: pd.DataFrame, ref: pd.DataFrame):
    assert ours.columns.tolist() == ref.columns.tolist()
    assert len(ours) == len(ref)
    for column in ref.columns:
        assert [list(v) if column.startswith("tok_") and not column.endswith("length") else v for v in ours[column]] \
            == ref[column].tolist(), column


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo_tokenizer_path):
    out = tmp_path_factory.mktemp("orca_ref")
    parquet = out / "demo.parquet"
    write_demo_parquet(parquet, rows_per_origin=40, seed=11)
    filter_stats = filter_parquet(parquet, demo_tokenizer_path, out / "full.parquet", out / "filter.json",
                                  response_init_token="Ġ", batch_rows=64)
    sample_dataset(out / "full.parquet", out / "filter.json", total=TOTAL, calibration_size=CALIBRATION, seed=1337,
                   calibration_seed=12345, output=out / "s.pkl", output_parquet=out / "s.parquet",
                   calibration=out / "c.pkl", stats_path=out / "stats.json")
    ref = _replica(parquet, _hf_tokenizer(demo_tokenizer_path), filter_stats["response_init_id"])
    return out, ref


def test_filtered_set_equals_reference(built):
    out, (full, _, _) = built
    _same(pd.read_parquet(out / "full.parquet"), full)


def test_sampled_and_calibration_pickles_equal_reference(built):
    out, (_, sampled, calibration) = built
    ours = pd.read_pickle(out / "s.pkl")
    _same(ours, sampled)
    _same(pd.read_pickle(out / "c.pkl"), calibration)
    _same(pd.read_parquet(out / "s.parquet"), sampled)
    assert ours.index.equals(pd.RangeIndex(TOTAL))
    # The reference's cells: Python str and lists of Python int; text columns of object dtype.
    assert all(ours[c].dtype == object for c in ("id", "input", "tok_input", "tok_output", "origin"))
    assert type(ours["tok_input"][0]) is list and type(ours["tok_input"][0][0]) is int


def test_double_bos_as_in_the_published_pickle(built):
    out, _ = built
    ours = pd.read_pickle(out / "s.pkl")
    stats = pd.read_json(out / "filter.json", typ="series")
    for tok_in, tok_out in zip(ours["tok_input"], ours["tok_output"]):
        assert tok_in[:2] == [1, 1] and tok_in[2] != 1 and tok_in[-1] == stats["response_init_id"]
        assert tok_out[0] == 1 and tok_out[1] != 1
