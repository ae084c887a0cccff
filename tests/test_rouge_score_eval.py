"""ROUGE scoring as evaluate-accuracy.py: decoding, sentence-split independence, means, targets, bad input."""
from __future__ import annotations

import json
import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
import pytest
from rouge_score import rouge_scorer
from tokenizers import Tokenizer

from workflow_scripts.scoring import rouge_score_eval as R
from workflow_scripts.inference.accuracy_log import read_accuracy_log, write_accuracy_log
from workflow_scripts.core.errors import PipelineInputError

TARGETS = [
    "The cats are running in the garden. They chased a mouse!",
    "Paris is the capital of France. It hosts the Louvre.",
    "Water boils at one hundred degrees Celsius at sea level.",
]
PREDICTIONS = [
    "A cat runs in gardens. It chases mice.",
    "The capital of France is Paris.",
    "Ice melts at zero degrees.",
]


def _samples(tmp_path, targets=TARGETS):
    path = tmp_path / "samples.pkl"
    pd.DataFrame({"output": targets, "tok_input": [[1, 2]] * len(targets)}).to_pickle(path)
    return path


def test_accuracy_log_round_trip_keeps_first_duplicate(tmp_path):
    path = tmp_path / "acc.json"
    write_accuracy_log(path, [(1, [5, 6, 7]), (0, [3]), (1, [9])])
    assert read_accuracy_log(path) == {1: [5, 6, 7], 0: [3]}
    assert json.loads(path.read_text())[0]["data"] == "050000000600000007000000"  # int32 little endian, as LoadGen


def test_rouge_1_2_l_do_not_depend_on_sentence_splitting():
    # The reference joins nltk sentences with "\n"; rouge_score's tokenizer treats "\n" like any separator.
    scorer = rouge_scorer.RougeScorer(list(R.ROUGE_TYPES), use_stemmer=True)
    split = {"The cats are running in the garden. They chased a mouse!":
             "The cats are running in the garden.\nThey chased a mouse!",
             "A cat runs in gardens. It chases mice.": "A cat runs in gardens.\nIt chases mice."}
    target, prediction = TARGETS[0], PREDICTIONS[0]
    plain = scorer.score(target, prediction)
    lined = scorer.score(split[target], split[prediction])
    for t in R.ROUGE_TYPES:
        assert plain[t].fmeasure == lined[t].fmeasure
        assert 0 < plain[t].fmeasure < 1
    # ... while rougeLsum does change with the lines, which is why it needs the reference's splitter.
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    assert lsum.score(target, prediction)["rougeLsum"].fmeasure != lsum.score(split[target], split[prediction])["rougeLsum"].fmeasure


def test_stemmer_is_used():
    scores = R.rouge_fmeasures(["cats running"], ["cat runs"])
    assert scores["rouge1"] == [1.0]


def test_evaluate_decodes_strips_and_averages(tmp_path, demo_tokenizer_path):
    tok = Tokenizer.from_file(str(demo_tokenizer_path))
    eos = tok.token_to_id("</s>")
    ids = [tok.encode("  " + p + " ").ids + [eos] for p in PREDICTIONS]  # padding blanks and EOS must not count
    write_accuracy_log(tmp_path / "acc.json", list(enumerate(ids)))
    scores = R.evaluate(_samples(tmp_path), tmp_path / "acc.json", demo_tokenizer_path)
    decoded = [tok.decode(i, skip_special_tokens=True).strip() for i in ids]
    per_sample = R.rouge_fmeasures(decoded, TARGETS)
    for t in R.ROUGE_TYPES:
        assert scores[t] == round(sum(per_sample[t]) / 3 * 100, 4)
    assert 0 < scores["rouge1"] < 100
    assert scores["gen_num"] == 3 and scores["gen_tok_len"] == sum(map(len, ids))
    assert scores["tokens_per_sample"] == round(sum(map(len, ids)) / 3, 1)
    assert scores["targets"]["llama2-70b-99"]["passed"] is False  # short toy answers are far below the targets


def test_identical_answers_score_100(tmp_path, demo_tokenizer_path):
    tok = Tokenizer.from_file(str(demo_tokenizer_path))
    write_accuracy_log(tmp_path / "acc.json", [(i, tok.encode(t).ids) for i, t in enumerate(TARGETS)])
    scores = R.evaluate(_samples(tmp_path), tmp_path / "acc.json", demo_tokenizer_path, workers=2)
    assert [scores[t] for t in R.ROUGE_TYPES] == [100.0, 100.0, 100.0]


def test_verdicts_use_spec_thresholds():
    scores = {"rouge1": 44.39, "rouge2": 22.02, "rougeL": 28.59, "tokens_per_sample": 294.4}
    v = R.verdicts(scores)
    assert v["llama2-70b-99"]["passed"] is True
    assert v["llama2-70b-99.9"]["passed"] is True
    assert v["llama2-70b-99.9"]["checks"]["rouge1"]["min"] == pytest.approx(44.3867688)
    assert R.verdicts({**scores, "rouge1": 44.38})["llama2-70b-99.9"]["passed"] is False
    assert R.verdicts({**scores, "rouge1": 44.38})["llama2-70b-99"]["passed"] is True
    bounds = R.verdicts({**scores, "tokens_per_sample": 324.0})["llama2-70b-99"]["checks"]["tokens_per_sample"]
    assert (bounds["min"], bounds["max"], bounds["passed"]) == (pytest.approx(265.005), pytest.approx(323.895), False)


def test_fewer_outputs_than_samples_names_the_log(tmp_path, demo_tokenizer_path):
    write_accuracy_log(tmp_path / "acc.json", [(0, [5]), (1, [6])])
    with pytest.raises(PipelineInputError, match=r"acc\.json: generated outputs for 2 samples, the sample list has 3"):
        R.evaluate(_samples(tmp_path), tmp_path / "acc.json", demo_tokenizer_path)


def test_missing_log_exits_2_with_its_name(tmp_path, demo_tokenizer_path, capsys):
    rc = R.main(["--samples", str(_samples(tmp_path)), "--accuracy-log", str(tmp_path / "nope.json"),
                 "--tokenizer", str(demo_tokenizer_path), "--out", str(tmp_path / "rouge.json"), "--threads", "1",
                 "--limit", "0"])
    assert rc == 2
    assert "nope.json: accuracy log missing" in capsys.readouterr().err
    assert not (tmp_path / "rouge.json").exists()


def _worker_fault(monkeypatch, fault):
    """Scoring fails only inside the pool's worker processes (forked, so they inherit the patch)."""
    parent = os.getpid()
    real = rouge_scorer.RougeScorer.score

    def score(self, target, prediction):
        if os.getpid() != parent:
            fault()
        return real(self, target, prediction)

    monkeypatch.setattr(rouge_scorer.RougeScorer, "score", score)


def _many(tmp_path, demo_tokenizer_path, n=64):
    tok = Tokenizer.from_file(str(demo_tokenizer_path))
    targets = (TARGETS * n)[:n]  # enough rows for the process pool (64 and more)
    write_accuracy_log(tmp_path / "acc.json", [(i, tok.encode(t).ids) for i, t in enumerate(targets)])
    return ["--samples", str(_samples(tmp_path, targets)), "--accuracy-log", str(tmp_path / "acc.json"),
            "--tokenizer", str(demo_tokenizer_path), "--out", str(tmp_path / "rouge.json"), "--threads", "2",
            "--limit", "0"]


def test_an_error_in_a_scoring_process_fails_the_job_with_its_message(tmp_path, demo_tokenizer_path, monkeypatch):
    def fault():
        raise ValueError(f"scoring failed in worker {os.getpid()}")

    _worker_fault(monkeypatch, fault)
    with pytest.raises(ValueError, match=r"scoring failed in worker \d+") as err:
        R.main(_many(tmp_path, demo_tokenizer_path))
    assert str(os.getpid()) not in str(err.value)  # raised in a worker, re-raised here
    assert not (tmp_path / "rouge.json").exists()


def test_a_killed_scoring_process_fails_the_job(tmp_path, demo_tokenizer_path, monkeypatch):
    _worker_fault(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(BrokenProcessPool, match="terminated abruptly"):
        R.main(_many(tmp_path, demo_tokenizer_path))
    assert not (tmp_path / "rouge.json").exists()


def _loadgen_log(folder, outputs):
    """mlperf_log_accuracy.json as LoadGen writes it (a real Offline accuracy test answering `outputs`)."""
    from workflow_scripts.inference.loadgen_run import AccuracyRun, LogPaths

    paths = LogPaths(folder / "mlperf_log_accuracy.json", folder / "summary.txt", folder / "detail.txt")
    run = AccuracyRun(len(outputs), paths)
    try:
        run.start()
        run.query_rows()
        run.complete(dict(enumerate(outputs)))
        run.finish()
    finally:
        run.close()
    return paths.accuracy


def test_loadgen_log_scores_as_the_same_ids_written_directly(tmp_path, demo_tokenizer_path):
    tok = Tokenizer.from_file(str(demo_tokenizer_path))
    ids = [tok.encode(p).ids + [tok.token_to_id("</s>")] for p in PREDICTIONS]
    loadgen = _loadgen_log(tmp_path, ids)
    write_accuracy_log(tmp_path / "direct.json", list(enumerate(ids)))
    assert read_accuracy_log(loadgen) == dict(enumerate(ids))
    samples = _samples(tmp_path)
    by_loadgen = R.evaluate(samples, loadgen, demo_tokenizer_path)
    direct = R.evaluate(samples, tmp_path / "direct.json", demo_tokenizer_path)
    assert {k: v for k, v in by_loadgen.items() if k != "accuracy_log"} == \
        {k: v for k, v in direct.items() if k != "accuracy_log"}


def test_truncated_or_foreign_loadgen_log_is_refused_naming_it(tmp_path, demo_tokenizer_path):
    tok = Tokenizer.from_file(str(demo_tokenizer_path))
    full = _loadgen_log(tmp_path, [tok.encode(t).ids for t in TARGETS]).read_text()
    samples, log = _samples(tmp_path), tmp_path / "mlperf_log_accuracy.json"
    entries = json.loads(full)

    def refused(text: str | bytes, message: str) -> None:
        log.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(PipelineInputError, match=rf"mlperf_log_accuracy\.json: {message}"):
            R.evaluate(samples, log, demo_tokenizer_path)

    refused(full[: len(full) // 2], "not valid JSON")  # cut mid-way, as a run that never ended leaves it
    refused("[\n", "not valid JSON")  # what LoadGen has written before the first answer
    refused(json.dumps(entries[:2]), "generated outputs for 2 samples, the sample list has 3")
    refused(json.dumps([*entries, {**entries[0], "qsl_idx": 7}]), "qsl_idx 7 is outside the sample list")
    refused(json.dumps({"results": entries}), "expected a JSON list")  # another tool's JSON
    refused(json.dumps([{"seq_id": 0, "qsl_idx": 0}]), "entry 0: bad accuracy-log entry")
    refused(json.dumps([{**entries[0], "data": entries[0]["data"] + "00"}]), "entry 0: bad accuracy-log entry")
    refused(b"\x89PNG\r\n\x1a\n\x00\xff", "not a text file")
    refused("", "not valid JSON")
