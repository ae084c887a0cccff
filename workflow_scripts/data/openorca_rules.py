"""The per-row rules of the MLPerf Inference llama2-70b dataset (mlcommons/inference language/llama2-70b/processorca.py).

Prompt template, origin, the English check, the bad system prompts and the order in which the filters apply. Pure
functions on one row; openorca_filter.py applies them to the parquet in batches. Every filter is row-wise, so batching
gives the same rows and the same per-filter counts as the reference's whole-frame passes.
"""
from __future__ import annotations

from typing import Sequence

PROMPT_WITH_SYSTEM = "<s>[INST] <<SYS>>\n{}\n<</SYS>>\n\n{} [/INST]"
PROMPT_NO_SYSTEM = "<s>[INST] {} [/INST]"

# Characters allowed besides ASCII (the reference took them from Habana): curly quotes and dashes.
ALLOWED_NON_ASCII = "’–“”—"
_DROP_ALLOWED = str.maketrans("", "", ALLOWED_NON_ASCII)

SEQLEN_LIMIT = 1024  # reference --seqlen_limit: both token lists must be strictly shorter
MIN_OUTPUT_TOKENS = 3  # tok_output (BOS included) shorter than this is a "1 or 2 word" answer
BAD_PROMPT_ORIGINS = ("niv", "t0")
BAD_SYSTEM_PROMPTS = (
    "",
    "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
    "You are an AI assistant. Provide a detailed answer so user don’t need to search outside to understand the answer.",
    "You are an AI assistant. Provide a detailed answer so user don't need to search outside to understand the answer.",
    "User will you give you a task with some instruction. Your job is follow the instructions as faithfully as you can. "
    "While answering think step-by-step and justify your answer.",
    "Explain how you used the definition to come up with the answer.",
)
_BAD_SYSTEM_PROMPTS = frozenset(BAD_SYSTEM_PROMPTS)

# Filter names in the order the reference applies them; a row is counted under the first one it fails.
FILTERS = ("non_english", "input_too_long", "output_too_long", "short_output", "bad_system_prompt", "keyphrase")


def llama_prompt(system_prompt: str, question: str) -> str:
    """The Llama 2 chat prompt; an empty system prompt gives the template without the <<SYS>> block."""
    if system_prompt:
        return PROMPT_WITH_SYSTEM.format(system_prompt, question)
    return PROMPT_NO_SYSTEM.format(question)


def origin_of(sample_id: str) -> str:
    """`cot.123` -> `cot` (the sub-dataset: cot, flan, niv or t0)."""
    return sample_id.split(".")[0]


def is_english(text: str) -> bool:
    """Every character is ASCII or one of the allowed quotes and dashes."""
    return text.isascii() or text.translate(_DROP_ALLOWED).isascii()


def first_failed_filter(
    *,
    english: bool,
    input_length: int,
    output_length: int,
    origin: str,
    system_prompt: str,
    seqlen_limit: int = SEQLEN_LIMIT,
) -> str | None:
    """The name of the first filter (in reference order) that removes the row, or None when it is kept.

    `english` is is_english(input) and is_english(output); lengths are those of tok_input (with its appended token)
    and tok_output. The reference registers no keyphrase, so that filter never removes a row.
    """
    if not english:
        return "non_english"
    if input_length >= seqlen_limit:
        return "input_too_long"
    if output_length >= seqlen_limit:
        return "output_too_long"
    if output_length < MIN_OUTPUT_TOKENS:
        return "short_output"
    if origin in BAD_PROMPT_ORIGINS and system_prompt in _BAD_SYSTEM_PROMPTS:
        return "bad_system_prompt"
    return None


def empty_counts(names: Sequence[str] = FILTERS) -> dict[str, int]:
    return {name: 0 for name in names}
