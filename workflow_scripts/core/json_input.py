"""Reading an input JSON object (stats, metrics, verdicts), refused with the file's name when it is missing, not JSON
or not an object (shared by the score table and the report); spotting JSON-lines strings that are not Unicode text."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workflow_scripts.core.errors import PipelineInputError


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


# Only these escapes (\uD800-\uDFFF, hex digits of either case) put a UTF-16 surrogate into a decoded JSON string.
_SURROGATE_ESCAPES = (b"\\ud", b"\\uD")


def lone_surrogate(line: bytes, value: str) -> str | None:
    """What is wrong with `value` (a string decoded from the JSON `line`) if it holds a lone surrogate, else None.

    JSON may spell "\\ud800" without its pair; Python decodes it into a string that no UTF-8 text holds, which
    tokenizers refuse with an error naming no input. The byte search keeps the common case (no such escape) cheap.
    """
    if not any(escape in line for escape in _SURROGATE_ESCAPES):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"holds a lone surrogate \\u{ord(value[err.start]):04x} at character {err.start}, not Unicode text"
    return None
