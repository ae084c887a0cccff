"""Reading an input JSON object (stats, metrics, verdicts), refused with the file's name when it is missing, not JSON
or not an object (shared by the score table and the report)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import PipelineInputError


def read_json_object(path: Path | str, what: str = "file") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: {what} missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineInputError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno})") from None
    if not isinstance(data, dict):
        raise PipelineInputError(f"{path}: expected a JSON object")
    return data
