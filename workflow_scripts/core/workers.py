"""Errors of worker threads and processes reach the job that started them.

Python prints an exception that ends a thread and carries on: a pool whose worker died that way (torch DCP's writer
threads) returns with part of its work missing, and the job exits 0. `thread_errors()` records such exceptions while
a step runs and raises the first one when the step ends, so the job fails with the worker's own message.

A worker process killed outright (the OOM killer's SIGKILL) reports nothing at all; a parent waiting for its report
waits forever (megatron's checkpoint writers do). `child_deaths()` watches the children while a step runs and
interrupts the step with `WorkerDied` naming the process.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
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


class WorkerDied(RuntimeError):
    """A child process died of a signal or exited non-zero while the parent waited for its work."""


def child_death(pid: int) -> str | None:
    """How child `pid` ended, if it ended badly; it is not reaped (its parent's own wait still sees it)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already, or not our child
        return None
    if info is None or (info.si_code == os.CLD_EXITED and info.si_status == 0):
        return None
    if info.si_code == os.CLD_EXITED:
        return f"exited with status {info.si_status}"
    return f"was killed by {signal.Signals(info.si_status).name}"


@contextlib.contextmanager
def child_deaths(what: str, poll_s: float = 0.5, grace_s: float = 60.0) -> Iterator[None]:
    """Run the block (in the main thread) while a thread polls this process's children: one that dies badly raises
    `WorkerDied("<what> process <pid> was killed by SIGKILL")` in the block, through SIGUSR2 (a blocking wait in Python
    returns to run a signal handler). If the block has not ended `grace_s` after that, the job exits 1 from the
    watcher: a hung job is never the outcome. Children that had ended before the block are not the block's."""
    import psutil

    me = psutil.Process()
    earlier = {child.pid for child in me.children() if child_death(child.pid)}
    stop, found = threading.Event(), []
    main = threading.main_thread().ident

    def on_signal(signum, frame) -> None:  # noqa: ARG001
        if found:
            raise WorkerDied(found[0])

    def watch() -> None:
        while not stop.wait(poll_s):
            for child in me.children():
                why = None if child.pid in earlier else child_death(child.pid)
                if why:
                    found.append(f"{what} process {child.pid} {why}")
                    log.error("%s; stopping", found[0])
                    signal.pthread_kill(main, signal.SIGUSR2)
                    if not stop.wait(grace_s):
                        log.error("%s; the job did not stop within %.0f s, exiting", found[0], grace_s)
                        os._exit(1)
                    return

    previous = signal.signal(signal.SIGUSR2, on_signal)
    watcher = threading.Thread(target=watch, name=f"watch-{what}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGUSR2, previous)
