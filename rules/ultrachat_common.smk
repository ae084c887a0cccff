# Helpers of rules/ultrachat.smk (input functions, params, config checks); kept apart as snakemake --lint asks.
import glob as _glob

ULTRACHAT_SPLITS = ["train", "test"]
ULTRACHAT_DEMO_DIR = f"{DEMO_DIR}/ultrachat/data"
ULTRACHAT_DEMO_NAMES = [
    "train_gen-00000-of-00001.parquet", "train_sft-00000-of-00001.parquet",
    "test_gen-00000-of-00001.parquet", "test_sft-00000-of-00001.parquet",
]
ULTRACHAT_DEMO_FILES = {split: [n for n in ULTRACHAT_DEMO_NAMES if n.startswith(f"{split}_")] for split in ULTRACHAT_SPLITS}


wildcard_constraints:
    ultrachat_split=r"train|test",


def _ultrachat_real_files(split):
    """The split's files in the configured folder, sorted by name; none is a config error (checked before any job)."""
    uc = config["ultrachat"]
    key = f"{split}_glob"
    pattern = str(Path(uc["data_dir"]) / uc[key])
    files = sorted(_glob.glob(pattern))
    if not files:
        _config_error(f"ultrachat.{split}_glob: no file matches {pattern}")
    return files


def ultrachat_split_files(wildcards):
    if not config["ultrachat"]["data_dir"]:
        return [f"{ULTRACHAT_DEMO_DIR}/{name}" for name in ULTRACHAT_DEMO_FILES[wildcards.ultrachat_split]]
    return _ultrachat_real_files(wildcards.ultrachat_split)


def ultrachat_base_tokenizer(wildcards=None):
    path = config["ultrachat"]["tokenizer"]
    if not path:
        return f"{DEMO_DIR}/tokenizer/tokenizer.json"
    return str(Path(path) / "tokenizer.json") if Path(path).is_dir() else path


def ultrachat_tokenizer_flags(wildcards):
    return "" if config["ultrachat"]["add_chatml_tokens"] else "--no-add"


def ultrachat_pack_flags(wildcards):
    uc = config["ultrachat"]
    flags = [
        f"--seq-length {uc['seq_length']}", f"--chars-per-token {uc['chars_per_token']}",
        f"--num-of-sequences {uc['num_of_sequences']}", f"--seed {uc['seed']}",
    ]
    if not uc["shuffle"]:
        flags.append("--no-shuffle")
    return " ".join(flags)


