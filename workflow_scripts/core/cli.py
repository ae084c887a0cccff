"""Shared `main` wrapper: bad input exits 2 with a one-line message instead of a traceback."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.progress import setup_logging


def run_main(body: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None) -> int:
    setup_logging()
    try:
        return body(argv) or 0
    except PipelineInputError as err:
        # One line even when the message quotes a library's multi-line error (pyarrow's thrift errors are).
        print("error: " + " ".join(part.strip() for part in str(err).splitlines() if part.strip()), file=sys.stderr)
        return 2
