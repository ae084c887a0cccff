"""PIPELINE_TEST_KILL_AT_STEP and PIPELINE_TEST_STEP_SLEEP_S: hooks around the trainer's checkpoint decision
(Trainer.after_step), installed when workflow_scripts.train.train_run is imported, so that a process that never
trains never imports torch for them."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys
import time
from types import ModuleType
from typing import Callable, Mapping

from seam_names import KILL_AT_STEP_ENV, STEP_SLEEP_ENV

TRAINER_MODULE = "workflow_scripts.train.train_run"


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds `name` as the path finder would, and runs `patch` on the module once it has executed."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]):
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def wrap_after_step(trainer_cls: type, kill_at: int, sleep_s: float) -> None:
    """Sleep before each checkpoint decision, SIGKILL after step `kill_at`'s (unless the job stops there anyway);
    both only in a run that did not resume."""
    after_step = trainer_cls.after_step

    def seamed(self, step: int, status, progress) -> bool:
        fresh = self.resumed_from is None
        if sleep_s and fresh:
            time.sleep(sleep_s)
        stop = after_step(self, step, status, progress)
        if kill_at and step == kill_at and fresh and not stop:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash without any chance to clean up
        return stop

    trainer_cls.after_step = seamed


def install(environ: Mapping[str, str]) -> None:
    kill_at = int(environ.get(KILL_AT_STEP_ENV, "0"))
    sleep_s = float(environ.get(STEP_SLEEP_ENV, "0"))
    if kill_at or sleep_s:
        sys.meta_path.insert(0, PatchOnImport(TRAINER_MODULE, lambda m: wrap_after_step(m.Trainer, kill_at, sleep_s)))
