"""Errors of worker threads and processes reach the job: each kind of worker of the pipeline, one test each.

Here: the shared thread guard. The workers themselves are tested with their stage: DCP writer threads
(tests/test_convert.py), the C4 reader thread (tests/test_c4_tokenize.py), ROUGE scoring processes
(tests/test_rouge_score_eval.py), megatron's checkpoint writer processes (tests/test_train_reliability.py) and the
raw-shard verification pool (tests/test_c4_consolidate.py)."""
from __future__ import annotations

import threading

import pytest

from workflow_scripts.errors import PipelineInputError
from workflow_scripts.workers import thread_errors


def _run_thread(target) -> None:
    thread = threading.Thread(target=target, name="worker-1")
    thread.start()
    thread.join()


def test_an_error_that_ends_a_thread_is_raised_when_the_block_ends(caplog):
    def fail():
        raise PipelineInputError("shard.bin: truncated")

    previous = threading.excepthook
    with pytest.raises(PipelineInputError, match="shard.bin: truncated"):
        with thread_errors():
            _run_thread(fail)
    assert threading.excepthook is previous
    assert "worker thread worker-1 failed: PipelineInputError: shard.bin: truncated" in caplog.text


def test_first_error_wins_and_the_blocks_own_error_is_kept():
    with pytest.raises(ValueError, match="first"):
        with thread_errors() as errors:
            _run_thread(lambda: (_ for _ in ()).throw(ValueError("first")))
            _run_thread(lambda: (_ for _ in ()).throw(KeyError("second")))
            assert len(errors.errors) == 2
    with pytest.raises(RuntimeError, match="main"):
        with thread_errors():
            _run_thread(lambda: (_ for _ in ()).throw(ValueError("worker")))
            raise RuntimeError("main")


def test_nothing_is_raised_without_a_failure():
    with thread_errors() as errors:
        _run_thread(lambda: None)
    assert not errors.failed
