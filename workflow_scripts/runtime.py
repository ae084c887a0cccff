"""What the Snakefile sets up for every job process."""
from __future__ import annotations

import os


def export_package_path(basedir: str) -> None:
    """Put the workflow folder on PYTHONPATH so jobs run `python -m workflow_scripts.<stage>` without an install.

    Set by the Snakefile at parse time, hence also on compute nodes, where each job re-reads the Snakefile.
    """
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if basedir not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([basedir, *parts])
