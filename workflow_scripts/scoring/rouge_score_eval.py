"""ROUGE of generated answers against the OpenOrca targets, as MLPerf Inference's llama2-70b evaluate-accuracy.py.

    python -m workflow_scripts.scoring.rouge_score_eval --samples open_orca...sampled_N.pkl --accuracy-log
        mlperf_log_accuracy.json --tokenizer tokenizer.json --out rouge.json --threads 2 --limit N   (0: all)

The log is LoadGen's (the generate rule's Offline accuracy test); read as the reference: hex `data` -> int32 ids per
qsl_idx. A log cut short, or one of another sample list (samples missing, qsl_idx outside it, entries that are not
{qsl_idx, data} or not whole int32 values), is refused naming the file. Steps as the reference: entries deduplicated
by qsl_idx (first kept), token ids decoded with special tokens skipped, both texts stripped, Google `rouge_score`
with the Porter stemmer, per-sample F-measures, mean x 100 rounded to 4 places, tokens_per_sample = round(generated
tokens / samples, 1); pass/fail against the submission checker's 99% and 99.9% targets. The reference joins nltk
sentences with newlines before scoring; that matters only for rougeLsum (rouge_score's default tokenizer turns every
non-alphanumeric run, newlines included, into one separator), so rougeLsum is computed only where nltk's punkt data
is installed, else reported as null. Scores report pass/fail; they never fail the rule. The real reference decodes
with the slow sentencepiece tokenizer; here tokenizer.json (fast).
"""
from __future__ import annotations

import argparse
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from workflow_scripts.inference.accuracy_log import DTYPE, read_accuracy_log, read_sample_column
from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.tokenizer_files import load_tokenizer

log = logging.getLogger("rouge_score_eval")

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# FP16 reference of INF:language/llama2-70b/README.md; the submission checker scales it by the accuracy target.
REFERENCE = {"rouge1": 44.4312, "rouge2": 22.0352, "rougeL": 28.6162, "tokens_per_sample": 294.45}
TARGET_FRACTIONS = {"llama2-70b-99": 0.99, "llama2-70b-99.9": 0.999}
TOKENS_PER_SAMPLE_BOUNDS = (0.9, 1.1)


def read_targets(samples: Path | str) -> list[str]:
    """The reference answers (`output` column) of the sampled evaluation set, in qsl_idx order."""
    return [str(x) for x in read_sample_column(samples, "output")]


def ordered_predictions(generated: dict[int, list[int]], n_samples: int, log_path: Path | str) -> list[list[int]]:
    """Generated ids for qsl_idx 0..n-1; a log that misses samples or names unknown ones is refused."""
    missing = [i for i in range(n_samples) if i not in generated]
    unknown = sorted(i for i in generated if not 0 <= i < n_samples)
    if missing:
        raise PipelineInputError(f"{log_path}: generated outputs for {len(generated)} samples, the sample list has "
                                 f"{n_samples}; {len(missing)} missing (first qsl_idx {missing[0]})")
    if unknown:
        raise PipelineInputError(f"{log_path}: qsl_idx {unknown[0]} is outside the sample list (size {n_samples})")
    return [generated[i] for i in range(n_samples)]


def punkt_available() -> bool:
    """nltk's pretrained English punkt (the reference's sentence splitter) is installed locally; nothing downloads."""
    try:
        import nltk

        nltk.data.find("tokenizers/punkt_tab/english/")
        return True
    except (ImportError, LookupError):
        return False


def sentence_lines(text: str) -> str:
    import nltk

    return "\n".join(nltk.sent_tokenize(text))


def _score_chunk(args: tuple[list[str], list[str], tuple[str, ...]]) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    predictions, targets, types = args
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in types}
    for prediction, target in zip(predictions, targets):
        scores = scorer.score(target, prediction)
        for t in types:
            out[t].append(scores[t].fmeasure)
    return out


def rouge_fmeasures(predictions: list[str], targets: list[str], types: Sequence[str] = ROUGE_TYPES,
                    workers: int = 1) -> dict[str, list[float]]:
    """Per-sample F-measures (the reference's use_aggregator=False), in chunks over `workers` processes."""
    types = tuple(types)
    if workers <= 1 or len(predictions) < 64:
        return _score_chunk((predictions, targets, types))
    size = math.ceil(len(predictions) / workers)
    chunks = [(predictions[i:i + size], targets[i:i + size], types) for i in range(0, len(predictions), size)]
    merged: dict[str, list[float]] = {t: [] for t in types}
    with ProcessPoolExecutor(workers) as pool:
        for part in pool.map(_score_chunk, chunks):
            for t in types:
                merged[t].extend(part[t])
    return merged


def verdicts(scores: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pass/fail per accuracy target, each metric against reference x fraction, tokens_per_sample within bounds."""
    low, high = (REFERENCE["tokens_per_sample"] * f for f in TOKENS_PER_SAMPLE_BOUNDS)
    result = {}
    for name, fraction in TARGET_FRACTIONS.items():
        checks = {t: {"value": scores[t], "min": REFERENCE[t] * fraction, "passed": scores[t] >= REFERENCE[t] * fraction}
                  for t in ROUGE_TYPES}
        tps = scores["tokens_per_sample"]
        checks["tokens_per_sample"] = {"value": tps, "min": low, "max": high, "passed": low <= tps <= high}
        result[name] = {"checks": checks, "passed": all(c["passed"] for c in checks.values())}
    return result


def evaluate(samples: Path | str, accuracy_log: Path | str, tokenizer: Path | str, workers: int = 1,
             dtype: str = DTYPE, limit: int = 0) -> dict[str, Any]:
    """Scores of the first `limit` samples (0 = all); the log must hold exactly those."""
    targets = read_targets(samples)
    list_size = len(targets)
    targets = targets[:limit] if limit else targets
    decoder = load_tokenizer(tokenizer)
    generated = read_accuracy_log(accuracy_log, dtype, decoder.get_vocab_size(with_added_tokens=True))
    preds = ordered_predictions(generated, len(targets), accuracy_log)
    texts = [t.strip() for t in decoder.decode_batch(preds, skip_special_tokens=True)]
    targets = [t.strip() for t in targets]
    fmeasures = rouge_fmeasures(texts, targets, ROUGE_TYPES, workers)
    scores: dict[str, Any] = {t: round(float(np.mean(v)) * 100, 4) for t, v in fmeasures.items()}
    if punkt_available():
        lsum = rouge_fmeasures([sentence_lines(t) for t in texts], [sentence_lines(t) for t in targets],
                               ("rougeLsum",), workers)["rougeLsum"]
        scores["rougeLsum"] = round(float(np.mean(lsum)) * 100, 4)
    else:
        scores["rougeLsum"] = None
        scores["rougeLsum_note"] = "not computed: nltk punkt data (the reference's sentence splitter) not installed"
    gen_tok_len = sum(len(p) for p in preds)
    scores.update({"gen_len": sum(len(t) for t in texts), "gen_num": len(texts), "gen_tok_len": gen_tok_len,
                   "tokens_per_sample": round(gen_tok_len / len(texts), 1) if texts else 0.0})
    scores["targets"] = verdicts(scores)
    scores.update({"samples": str(samples), "sample_list_size": list_size, "accuracy_log": str(accuracy_log),
                   "tokenizer": str(tokenizer)})
    return scores


def _body(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.scoring.rouge_score_eval", description=__doc__.split("\n")[0])
    p.add_argument("--samples", required=True, type=Path, help="sampled OpenOrca .pkl/.parquet (column output)")
    p.add_argument("--accuracy-log", required=True, type=Path, help="mlperf_log_accuracy.json of the generation")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.json used to decode the ids")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dtype", default=DTYPE, choices=["int32", "int64"])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--limit", type=int, required=True, help="score the first N samples only (as generate --limit)")
    args = p.parse_args(argv)
    scores = evaluate(args.samples, args.accuracy_log, args.tokenizer, args.threads, args.dtype, args.limit)
    log.info("scores: %s", {k: scores[k] for k in (*ROUGE_TYPES, "rougeLsum", "tokens_per_sample", "gen_num")})
    for name, verdict in scores["targets"].items():
        log.info("%s: %s", name, "PASS" if verdict["passed"] else "FAIL")
    write_json(args.out, scores)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
