"""Errors of worker threads and processes reach the job: each kind of worker of the pipeline, one test each.

Here: the shared guards (thread errors, dying child processes). The workers themselves are tested with their stage:
DCP writer threads (tests/test_convert.py), the C4 reader thread (tests/test_c4_tokenize.py), ROUGE scoring processes
(tests/test_rouge_score_eval.py), megatron's checkpoint writer processes (tests/test_train_reliability.py) and the
raw-shard verification pool (tests/test_c4_consolidate.py)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.workers import WorkerDied, child_deaths, thread_errors


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


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("target,expected", [(_die, "was killed by SIGKILL"),
                                             (lambda: os._exit(3), "exited with status 3")])
def test_a_child_that_dies_badly_interrupts_a_wait_for_its_report(target, expected):
    """The parent blocks on a queue the child never writes (megatron's writers report so); without the watch the
    wait would last forever (here: until the 30 s timeout, which fails the test)."""
    ctx = multiprocessing.get_context("fork")
    reports = ctx.Queue()
    with pytest.raises(WorkerDied, match=rf"writer process (\d+) {expected}") as err:
        with child_deaths("writer", poll_s=0.05):
            child = ctx.Process(target=target)
            child.start()
            reports.get(timeout=30)
    assert str(child.pid) in str(err.value)
    child.join()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def test_children_that_end_well_or_ended_before_are_not_failures():
    ctx = multiprocessing.get_context("fork")
    before = ctx.Process(target=_die)
    before.start()
    time.sleep(0.3)  # dead, not reaped: it is not the block's
    with child_deaths("writer", poll_s=0.05):
        fine = ctx.Process(target=lambda: None)
        fine.start()
        time.sleep(0.3)
        fine.join()
    before.join()
    assert fine.exitcode == 0 and before.exitcode == -signal.SIGKILL
