"""Shared `main` wrapper: bad input exits 2 with a one-line message instead of a traceback."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from .errors import PipelineInputError
from .progress import setup_logging


def run_main(body: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None) -> int:
    setup_logging()
    try:
        return body(argv) or 0
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
