"""What the Snakefile sets up for every job process."""
from __future__ import annotations

import os
import sys


def _prepend(variable: str, entry: str) -> None:
    parts = [p for p in os.environ.get(variable, "").split(os.pathsep) if p]
    if entry not in parts:
        os.environ[variable] = os.pathsep.join([entry, *parts])


def export_package_path(basedir: str) -> None:
    """Put the workflow folder on PYTHONPATH so jobs run `python -m workflow_scripts.<stage>` without an install.

    Set by the Snakefile at parse time, hence also on compute nodes, where each job re-reads the Snakefile.
    """
    _prepend("PYTHONPATH", basedir)


def export_interpreter_path(executable: str = sys.executable) -> None:
    """Put the folder of the interpreter that runs Snakemake first on PATH, so that a rule's `python` and `torchrun`
    are that environment's (`.venv/bin/snakemake` works without activating .venv).

    Under --use-conda, Snakemake activates each rule's conda env inside the job's shell, which puts the env's own bin
    in front of this entry, so conda rules still run with their env.
    """
    _prepend("PATH", os.path.dirname(os.path.abspath(executable)))
