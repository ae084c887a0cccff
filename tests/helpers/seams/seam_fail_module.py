"""PIPELINE_TEST_FAIL_MODULE=<module>: `python -m workflow_scripts.<pkg>.<module>` exits 1 at start-up with
"error: failure injected by PIPELINE_TEST_FAIL_MODULE=<module>" on stderr."""
from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

from seam_names import FAIL_MODULE_ENV

PACKAGE = "workflow_scripts."
OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")  # interpreter options taking the next argument


def run_module(argv: Sequence[str]) -> str | None:
    """The module of `python [options] -m MODULE ...` (sys.orig_argv), or None for a script, -c or an empty argv."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in OPTIONS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-") or arg.startswith("-c"):
            return None
    return None


def install(environ: Mapping[str, str], argv: Sequence[str]) -> None:
    name = environ.get(FAIL_MODULE_ENV)
    module = run_module(argv)
    if name and module and module.startswith(PACKAGE) and module.rsplit(".", 1)[-1] == name:
        print(f"error: failure injected by {FAIL_MODULE_ENV}={name}", file=sys.stderr, flush=True)
        os._exit(1)  # a SystemExit would escape site.py's start-up as a fatal error; exit as a crashing job does
