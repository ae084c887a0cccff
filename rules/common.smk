# Shared helpers of all rules: config checks that a schema cannot express, input functions, target lists.
from pathlib import Path

from workflow_scripts.data import c4_layout
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.runtime import export_interpreter_path, export_package_path


wildcard_constraints:
    c4_name=r"c4-train\.en_\d+|c4-validation-\d+-samples\.en",
    group=r"\d+",


export_package_path(workflow.basedir)
export_interpreter_path()
DEMO_DIR = "results/demo"
# Each slow rule's `benchmark:` file (wall time, memory); a run output like any other, so it is not tracked.
RULE_BENCHMARK_DIR = "results/benchmarks/rules"


# Scheduling priority of the demo's longest chain (data -> base model -> conversion -> LoRA): with few cores, jobs off
# that chain (C4, pretraining, SFT) wait for a free core instead of delaying it.
CRITICAL_PATH_PRIORITY = 10


def rule_benchmark(name):
    return f"{RULE_BENCHMARK_DIR}/{name}"


def parent_of_first_output(wildcards, output):
    return str(Path(output[0]).parent)


def _config_error(message):
    raise WorkflowError(f"invalid config: {message}")


try:
    C4_GROUP_SIZE = c4_layout.group_size(config["c4"]["train_shards"], config["c4"]["train_groups"])
except PipelineInputError as err:
    _config_error(err)

C4_DEMO = not config["c4"]["raw_dir"]
C4_RAW_DIR = f"{DEMO_DIR}/c4/raw" if C4_DEMO else config["c4"]["raw_dir"]
if not C4_DEMO:
    # Lists the folder only (no data is read): a missing or extra shard fails here, before any job.
    try:
        c4_layout.check_raw_dir(C4_RAW_DIR, config["c4"]["train_shards"], config["c4"]["validation_shards"])
    except PipelineInputError as err:
        _config_error(err)


def c4_train_group_shards(wildcards):
    names = c4_layout.train_group_members(int(wildcards.group), config["c4"]["train_shards"], config["c4"]["train_groups"])
    return [f"{C4_RAW_DIR}/{name}" for name in names]


def c4_validation_shards(wildcards=None):
    return [f"{C4_RAW_DIR}/{name}" for name in c4_layout.validation_members(config["c4"]["validation_shards"])]


def c4_consolidated_names():
    names = [c4_layout.consolidated_train_name(k) for k in range(config["c4"]["train_groups"])]
    names.append(c4_layout.consolidated_validation_name(config["c4"]["validation_docs"]))
    return [name.removesuffix(".json.gz") for name in names]


def c4_tokenizer(wildcards=None):
    """The configured tokenizer.json, or the demo tokenizer the workflow trains."""
    path = config["c4"]["tokenizer"]
    if not path:
        return f"{DEMO_DIR}/tokenizer/tokenizer.json"
    return str(Path(path) / "tokenizer.json") if Path(path).is_dir() else path


def c4_tokenize_flags(wildcards):
    c4 = config["c4"]
    flags = [f"--bos-token '{c4.get('bos_token', '<s>')}'", f"--eod-token '{c4.get('eod_token', '</s>')}'"]
    if c4.get("append_eod", False):
        flags.append("--append-eod")
    if c4.get("add_bos", False):
        flags.append("--add-bos")
    return " ".join(flags)


def c4_sources_manifest(wildcards):
    """The consolidation manifest of a file: raw shards' line ranges (train files also byte ranges), so that a
    tokenization error names the raw shard and line."""
    return f"results/c4/consolidated/{wildcards.c4_name}.sources.json"


# Each rules/*.smk appends the final outputs of its stage; `rule all` asks for all of them.
ALL_TARGETS: list[str] = []


def all_targets():
    return ALL_TARGETS
