"""Errors of worker threads reach the job that started them.

Python prints an exception that ends a thread and carries on: a pool whose worker died that way (torch DCP's writer
threads) returns with part of its work missing, and the job exits 0. `thread_errors()` records such exceptions while
a step runs and raises the first one when the step ends, so the job fails with the worker's own message.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Iterator

log = logging.getLogger("workers")


class ThreadErrors:
    """Exceptions of worker threads, in the order they happened (each one once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []

    def add(self, error: BaseException) -> None:
        """Record an error; workers may call this themselves before they die (then the hook does not repeat it)."""
        with self._lock:
            if not any(error is seen for seen in self.errors):
                self.errors.append(error)

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def raise_first(self, cause: BaseException | None = None) -> None:
        """Re-raise the first recorded error as itself (a PipelineInputError keeps its exit code 2)."""
        if self.errors:
            raise self.errors[0] from cause

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        self.add(args.exc_value)
        name = args.thread.name if args.thread is not None else "?"
        log.error("worker thread %s failed: %s: %s", name, args.exc_type.__name__, args.exc_value)


@contextlib.contextmanager
def thread_errors() -> Iterator[ThreadErrors]:
    """Within the block, an exception that ends any thread is logged in one line and recorded; when the block ends
    without an exception of its own, the first recorded error is raised. threading.excepthook is process-wide, which
    suits a job: no thread of it may fail silently."""
    errors = ThreadErrors()
    previous = threading.excepthook
    threading.excepthook = errors._hook
    try:
        yield errors
    finally:
        threading.excepthook = previous
    errors.raise_first()


def checkpoint_failure(err: BaseException) -> BaseException:
    """The first worker error inside torch DCP's CheckpointException (its `failures` map ranks to (error, traceback)),
    else `err` itself: DCP's message is a page of tracebacks, the cause is one line."""
    for failure in getattr(err, "failures", {}).values():
        return failure[0] if isinstance(failure, tuple) else failure
    return err
