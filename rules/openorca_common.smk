# Paths and input functions of the OpenOrca stage (rules/openorca.smk); kept apart so rule files hold rules only.
from pathlib import Path

OPENORCA_DIR = "results/openorca"
OPENORCA_PREFIX = f"{OPENORCA_DIR}/open_orca_gpt4_tokenized_llama"
OPENORCA_DEMO_PARQUET = f"{DEMO_DIR}/openorca/1M-GPT4-Augmented.parquet"
OPENORCA_TOTAL = config["openorca"]["total_samples"]
OPENORCA_CALIBRATION = config["openorca"]["calibration_size"]


def openorca_parquet(wildcards=None):
    """The configured 1M-GPT4-Augmented.parquet, or the generated demo one."""
    return config["openorca"]["parquet"] or OPENORCA_DEMO_PARQUET


def openorca_tokenizer(wildcards=None):
    """The configured tokenizer.json (or folder holding one, e.g. Llama-2-70b-chat-hf), or the demo tokenizer."""
    path = config["openorca"]["tokenizer"]
    if not path:
        return f"{DEMO_DIR}/tokenizer/tokenizer.json"
    return str(Path(path) / "tokenizer.json") if Path(path).is_dir() else path


def openorca_response_init_token(wildcards=None):
    """The token appended to tok_input: Llama 2's "▁" (id 29871, as the reference), the byte-level space for the demo."""
    token = config["openorca"].get("response_init_token", "")
    if token:
        return token
    return "▁" if config["openorca"]["tokenizer"] else "Ġ"
