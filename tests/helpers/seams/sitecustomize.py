"""Test seams, started by Python itself in every process that has this folder on PYTHONPATH (see seam_names.py for
the variables). Without any of the variables nothing is installed; then the next sitecustomize on sys.path, if any
(a site's own), runs as it would without this folder."""
from __future__ import annotations

import importlib.util
import os
import sys

from seam_names import PREFIX


def _run_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        path = os.path.join(os.path.abspath(entry or "."), "sitecustomize.py")
        if os.path.dirname(path) != here and os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("_next_sitecustomize", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


if any(name.startswith(PREFIX) for name in os.environ):
    import seam_fail_module
    import seam_trainer

    seam_fail_module.install(os.environ, sys.orig_argv)
    seam_trainer.install(os.environ)
_run_next_sitecustomize()
