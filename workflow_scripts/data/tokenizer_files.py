"""Loading an HF `tokenizers` fast tokenizer from a `tokenizer.json` (or a folder holding one), with clear errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import refuse_lfs_pointer


def tokenizer_json_path(path: str | Path) -> Path:
    path = Path(path)
    candidate = path / "tokenizer.json" if path.is_dir() else path
    if not candidate.is_file():
        raise PipelineInputError(f"tokenizer: {candidate} does not exist (expected a tokenizer.json or a folder holding one)")
    refuse_lfs_pointer(candidate)
    return candidate


def load_tokenizer(path: str | Path):
    """A `tokenizers.Tokenizer`; refuses files that are not a tokenizer.json, naming them."""
    from tokenizers import Tokenizer

    json_path = tokenizer_json_path(path)
    try:
        return Tokenizer.from_file(str(json_path))
    except Exception as err:  # tokenizers raises bare Exception subclasses for bad JSON / unknown models
        raise PipelineInputError(f"tokenizer: {json_path} is not a valid tokenizer.json ({err})") from err


def tokenizer_sha256(path: str | Path) -> str:
    return hashlib.sha256(tokenizer_json_path(path).read_bytes()).hexdigest()


def special_token_id(tokenizer, token: str, why: str) -> int:
    """The id of a special token the configuration needs; a tokenizer without it is the wrong tokenizer."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise PipelineInputError(f"tokenizer has no token {token!r}, needed for {why}")
    return token_id
