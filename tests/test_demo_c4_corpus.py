"""The generated demo corpus: deterministic, real names and fields, and the awkward documents real C4 has."""
from __future__ import annotations

import gzip
import json

from workflow_scripts.demo.demo_c4_corpus import generate_corpus


def test_corpus_is_deterministic_and_realistic(tmp_path, demo_corpus_dir):
    again = tmp_path / "again"
    generate_corpus(again, train_shards=4, validation_shards=2, train_docs=40, validation_docs=30, seed=7)
    names = sorted(p.name for p in demo_corpus_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert "c4-train.00003-of-00004.json.gz" in names and "c4-validation.00001-of-00002.json.gz" in names
    assert all((again / n).read_bytes() == (demo_corpus_dir / n).read_bytes() for n in names)
    docs = []
    for name in names:
        with gzip.open(demo_corpus_dir / name, "rt", encoding="utf-8") as handle:
            docs += [json.loads(line) for line in handle]
    assert all(set(d) == {"text", "timestamp", "url"} and all(isinstance(v, str) for v in d.values()) for d in docs)
    texts = [d["text"] for d in docs]
    assert any(t == "" for t in texts), "some documents are empty"
    assert any(len(t.split()) > 2000 for t in texts), "some documents are long"
    assert any(not t.isascii() for t in texts), "some documents are non-ASCII"
    words = " ".join(texts).lower().split()
    assert words.count("the") > 20 * words.count("people"), "word frequencies follow a Zipf-like law"
