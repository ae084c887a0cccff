"""The demo GovReport generator: deterministic, summaries a function of the report, validation drawn to N packed rows."""
from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq

from workflow_scripts.demo import demo_govreport

from workflow_scripts.data import govreport_pack
from workflow_scripts.data.tokenizer_files import load_tokenizer

_SLOTS = (
    r"This report examines (?P<topic>.+?) at the (?P<agency>.+?) during fiscal year (?P<year>\d{4})\."
    r".*Our review found that (?P<finding>.+?)\."
    r".*We recommend that the (?P=agency) (?P<recommendation>.+?)\.$"
)


def test_summary_is_a_function_of_the_report():
    """What makes the demo learnable: every summary is the template filled with phrases copied from its report."""
    generator = demo_govreport.ReportGenerator(5)
    for _ in range(200):
        report, summary = generator.row()
        slots = re.fullmatch(_SLOTS, report, flags=re.S)
        assert slots, report[:200]
        assert summary == demo_govreport.summary_text(
            slots["agency"], slots["topic"], slots["year"], slots["finding"], slots["recommendation"]
        )


def test_generation_is_deterministic_and_hits_the_row_target(tmp_path, demo_tokenizer_path):
    kwargs = dict(seq_length=512, num_proc=2, batch_size=7)
    for out in (tmp_path / "a", tmp_path / "b"):
        demo_govreport.generate(out, 30, 25, 99, demo_tokenizer_path, **kwargs)
    for split in ("train", "validation"):
        assert (tmp_path / "a" / f"{split}.parquet").read_bytes() == (tmp_path / "b" / f"{split}.parquet").read_bytes()
    assert pq.read_metadata(tmp_path / "a" / "train.parquet").num_rows == 30

    stats_path = tmp_path / "v.stats.json"
    stats = govreport_pack.pack_file(
        tmp_path / "a" / "validation.parquet", tmp_path / "v.parquet", stats_path, demo_tokenizer_path,
        validation=True, **kwargs,
    )
    assert stats["rows"] == 25


def test_packed_rows_counts_like_the_pack_step(demo_tokenizer_path):
    tokenizer = load_tokenizer(demo_tokenizer_path)
    generator = demo_govreport.ReportGenerator(8)
    lengths = []
    ids = []
    for _ in range(40):
        report, summary = generator.row()
        tokens = [1] + tokenizer.encode(govreport_pack.full_text(report, summary, "</s>"), add_special_tokens=False).ids
        lengths.append(len(tokens))
        if len(tokens) <= 600:
            ids.append(np.array(tokens, np.int32))
    packed, _, _ = govreport_pack.pack_examples(ids, None, 600, 3, 4)
    assert demo_govreport.packed_rows(lengths, 600, 3, 4) == len(packed) > 0
