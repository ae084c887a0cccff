"""MLPerf LoadGen around the generation: the Offline scenario in accuracy mode, as the llama2-70b reference SUT.

LoadGen (`mlperf_loadgen`) issues the queries; the QSL is the sample list (total = performance sample count = the
samples generated, load/unload no-ops). Offline in accuracy mode sends one query holding every sample; the SUT
answers each with its generated ids as int32 bytes (n_tokens set). mlperf_log_accuracy.json, _summary.txt and
_detail.txt are LoadGen's own, written into a temporary folder beside the accuracy log and moved into place only
after the test finished, LoadGen logged no error and its accuracy log holds exactly the answered ids.

StartTestWithLogSettings blocks until every sample is answered, so it runs in a thread of its own; the caller's
thread (where torch.distributed and the GPU live) waits for the query, generates and answers (AccuracyRun).
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from workflow_scripts.core.atomic import temp_sibling
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.inference.accuracy_log import DTYPE, read_accuracy_log

log = logging.getLogger("loadgen")

SCENARIO, MODE = "Offline", "AccuracyOnly"
PREFIX = "mlperf_log_"
ACCURACY, SUMMARY, DETAIL = (f"{PREFIX}{name}" for name in ("accuracy.json", "summary.txt", "detail.txt"))
MLLOG = ":::MLLOG "
# Detail-log keys copied into generate.json (what LoadGen ran, and what it generated).
DETAIL_KEYS = ("loadgen_version", "effective_scenario", "effective_test_mode", "qsl_reported_total_count",
               "qsl_reported_performance_count", "generated_query_count", "generated_samples_per_query")
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LogPaths:
    """Where LoadGen's three files end up (the rule's outputs)."""
    accuracy: Path
    summary: Path
    detail: Path

    def items(self) -> list[tuple[str, Path]]:
        return [(SUMMARY, self.summary), (DETAIL, self.detail), (ACCURACY, self.accuracy)]  # accuracy log last


def offline_accuracy_settings():
    import mlperf_loadgen as lg

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Offline
    settings.mode = lg.TestMode.AccuracyOnly
    return settings


def log_settings(outdir: Path):
    import mlperf_loadgen as lg

    settings = lg.LogSettings()
    out = settings.log_output
    out.outdir, out.prefix, out.suffix = str(outdir), PREFIX, ""
    out.prefix_with_datetime = False
    out.copy_summary_to_stdout = False
    settings.enable_trace = False  # the trace is for performance runs; accuracy mode only needs the three logs
    settings.log_mode = lg.LoggingMode.AsyncPoll
    return settings


def read_detail(path: Path | str) -> tuple[dict[str, Any], list[str]]:
    """{key: value} of LoadGen's detail log (last value of a key kept) and its error messages."""
    path = Path(path)
    values: dict[str, Any] = {}
    errors: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith(MLLOG):
            continue
        try:
            entry = json.loads(line[len(MLLOG):])
            key, value = entry["key"], entry["value"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PipelineInputError(f"{path}: line {number}: not a LoadGen log entry ({err})") from None
        values[key] = value
        if (entry.get("metadata") or {}).get("is_error"):
            errors.append(f"{key}: {value}")
    return values, errors


def _place(src: Path, dest: Path) -> None:
    """Move one finished log onto its output path; a temporary sibling first, so `dest` appears whole."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    shutil.move(str(src), tmp)
    tmp.replace(dest)


def respond(samples: Sequence[tuple[int, int]], outputs: Mapping[int, Sequence[int]]) -> int:
    """lg.QuerySamplesComplete for (response id, qsl index) pairs: the ids as int32 bytes, n_tokens set. The arrays
    stay referenced until the call returns (LoadGen copies the bytes into its log then). Returns tokens answered."""
    import mlperf_loadgen as lg

    arrays = [np.ascontiguousarray(outputs[index], dtype=DTYPE) for _, index in samples]
    responses = [lg.QuerySampleResponse(sample_id, array.__array_interface__["data"][0], array.nbytes, array.size)
                 for (sample_id, _), array in zip(samples, arrays)]
    lg.QuerySamplesComplete(responses)
    return sum(len(outputs[index]) for _, index in samples)


class AccuracyRun:
    """One LoadGen test on global rank 0: start(), query_rows() (the Offline query's qsl indices), complete(outputs),
    finish() (logs into place, LoadGen's result); close() always, last (it answers an abandoned query first)."""

    def __init__(self, total: int, paths: LogPaths):
        if total < 1:
            raise PipelineInputError(f"LoadGen needs at least one sample, the sample list gives {total}")
        self.total, self.paths = total, paths
        self.tmpdir = temp_sibling(paths.accuracy, tag="loadgen")
        self._queries: queue.Queue = queue.Queue()
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._samples: list[tuple[int, int]] = []
        self._answered: dict[int, list[int]] | None = None
        self._sut = self._qsl = None

    def _issue(self, query_samples) -> None:  # LoadGen's issue thread: hand the query over, return at once
        self._queries.put([(int(s.id), int(s.index)) for s in query_samples])

    def _test(self) -> None:
        import mlperf_loadgen as lg

        try:
            # An audit.config in the working directory would make this a compliance test: name one that is absent.
            lg.StartTestWithLogSettings(self._sut, self._qsl, offline_accuracy_settings(), log_settings(self.tmpdir),
                                        str(self.tmpdir / "no-audit.config"))
        except BaseException as err:  # re-raised in the caller's thread by finish()
            self._errors.append(err)

    def start(self) -> None:
        import mlperf_loadgen as lg

        self.tmpdir.mkdir(parents=True)
        self._sut = lg.ConstructSUT(self._issue, lambda: None)
        self._qsl = lg.ConstructQSL(self.total, self.total, lambda rows: None, lambda rows: None)
        self._thread = threading.Thread(target=self._test, name="loadgen", daemon=True)
        self._thread.start()
        log.info("LoadGen %s scenario, %s mode: %d samples", SCENARIO, MODE, self.total)

    def query_rows(self) -> list[int]:
        """Waits for the Offline query; its distinct qsl indices, ascending (the batching then matches a run over
        the sample list without LoadGen)."""
        while True:
            try:
                self._samples = self._queries.get(timeout=POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError(f"LoadGen ended without issuing a query: {self._errors or 'no error given'}")
        rows = sorted({index for _, index in self._samples})
        if len(self._samples) != self.total or rows != list(range(self.total)):
            raise RuntimeError(f"LoadGen's {SCENARIO} accuracy query holds {len(self._samples)} samples "
                               f"({len(rows)} distinct), expected each of the {self.total} samples once")
        log.info("LoadGen issued one query of %d samples", len(self._samples))
        return rows

    def complete(self, outputs: Mapping[int, list[int]]) -> None:
        tokens = respond(self._samples, outputs)
        self._answered = dict(outputs)
        log.info("answered %d samples (%d tokens)", len(self._samples), tokens)

    def finish(self) -> dict[str, Any]:
        """Waits for LoadGen to end; checks its logs, moves them onto the output paths; LoadGen's result fields."""
        self._thread.join()
        if self._errors:
            raise self._errors[0]
        detail, errors = read_detail(self.tmpdir / DETAIL)
        if errors:
            raise RuntimeError(f"LoadGen logged {len(errors)} errors ({self.tmpdir / DETAIL}): {errors[0]}")
        logged = read_accuracy_log(self.tmpdir / ACCURACY)
        if logged != self._answered:
            raise RuntimeError(f"LoadGen's accuracy log holds {len(logged)} samples that differ from the "
                               f"{len(self._answered or {})} answered")
        for name, dest in self.paths.items():
            _place(self.tmpdir / name, dest)
        log.info("LoadGen logs: %s", ", ".join(str(dest) for _, dest in self.paths.items()))
        return {"scenario": SCENARIO, "mode": MODE, "query_samples": len(self._samples),
                **{key: detail.get(key) for key in DETAIL_KEYS}}

    def close(self) -> None:
        """An abandoned query (generation failed) is answered empty so that LoadGen ends; its logs are dropped."""
        import mlperf_loadgen as lg

        if self._thread is not None and self._thread.is_alive():
            while not self._samples and not self._queries.empty():
                self._samples = self._queries.get_nowait()
            if self._samples and self._answered is None:
                respond(self._samples, {index: [] for _, index in self._samples})
            self._thread.join(timeout=60)
        if self._thread is None or not self._thread.is_alive():
            for handle, destroy in ((self._qsl, lg.DestroyQSL), (self._sut, lg.DestroySUT)):
                if handle is not None:
                    destroy(handle)
            self._sut = self._qsl = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)
