"""Shared `main` wrapper: bad input exits 2 with a one-line message instead of a traceback."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.progress import setup_logging


# Test-only fault injection (tests/test_slurm_profile.py): `python -m workflow_scripts.<module>` exits 1 when this
# variable names <module>, as a crashing job would; it reaches Slurm jobs through sbatch's --export=ALL.
FAIL_MODULE_ENV = "PIPELINE_TEST_FAIL_MODULE"


def run_main(body: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None) -> int:
    setup_logging()
    if argv is None and os.environ.get(FAIL_MODULE_ENV) == Path(sys.argv[0]).stem:
        print(f"error: failure injected by {FAIL_MODULE_ENV}={os.environ[FAIL_MODULE_ENV]}", file=sys.stderr)
        return 1
    try:
        return body(argv) or 0
    except PipelineInputError as err:
        # One line even when the message quotes a library's multi-line error (pyarrow's thrift errors are).
        print("error: " + " ".join(part.strip() for part in str(err).splitlines() if part.strip()), file=sys.stderr)
        return 2
