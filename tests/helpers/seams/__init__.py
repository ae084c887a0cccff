"""Test seams: test-only hooks that Python starts from this folder's sitecustomize.py in a subprocess that has the
folder on PYTHONPATH and a seam variable set. Tests build such an environment with seam_env."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from seams.seam_names import FAIL_MODULE_ENV, KILL_AT_STEP_ENV, PREFIX, STEP_SLEEP_ENV

SEAMS_DIR = Path(__file__).resolve().parent
__all__ = ["FAIL_MODULE_ENV", "KILL_AT_STEP_ENV", "STEP_SLEEP_ENV", "SEAMS_DIR", "seam_env"]


def seam_env(env: Mapping[str, str], *paths: Path | str, **seams: str) -> dict[str, str]:
    """`env` with the seam variables `seams` set and PYTHONPATH = `paths` then this folder (a rule job prepends the
    workflow folder to it, keeping this entry)."""
    unknown = [name for name in seams if not name.startswith(PREFIX)]
    assert not unknown, f"not seam variables: {unknown}"
    return dict(env, **seams, PYTHONPATH=os.pathsep.join([*map(str, paths), str(SEAMS_DIR)]))
