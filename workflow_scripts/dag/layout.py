"""The DAG's layout, read from the validated config (defaults filled from the schema): every result path, the tokenizer
lookup, the config-to-arguments mapping of the data rules and the final targets. rules/common.smk builds one `Layout`;
rule files only name its attributes, so a path or a default is written here once.
"""
from __future__ import annotations

import glob
import json
import shlex
from pathlib import Path
from typing import Any

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data import c4_layout
from workflow_scripts.scoring.compliance import DEFAULT_RULESET

DEMO_DIR = "results/demo"
# Each slow rule's `benchmark:` file (wall time, memory); a run output like any other, so it is not tracked.
RULE_BENCHMARK_DIR = "results/benchmarks/rules"
DEMO_TOKENIZER = f"{DEMO_DIR}/tokenizer/tokenizer.json"

C4_DEMO_RAW_DIR = f"{DEMO_DIR}/c4/raw"
C4_CONSOLIDATED = "results/c4/consolidated"
C4_TOKENIZED = "results/c4/tokenized"
C4_TOKENIZED_EXTS = ("bin", "idx", "stats.json")

GOVREPORT_DIR = "results/govreport"
GOVREPORT_SPLITS = ("train", "validation")

OPENORCA_DIR = "results/openorca"
OPENORCA_PREFIX = f"{OPENORCA_DIR}/open_orca_gpt4_tokenized_llama"
OPENORCA_DEMO_PARQUET = f"{DEMO_DIR}/openorca/1M-GPT4-Augmented.parquet"

ULTRACHAT_DIR = "results/ultrachat"
ULTRACHAT_SPLITS = ("train", "test")
ULTRACHAT_TOKENIZER = f"{ULTRACHAT_DIR}/tokenizer/tokenizer.json"
ULTRACHAT_DEMO_DIR = f"{DEMO_DIR}/ultrachat/data"
ULTRACHAT_DEMO_NAMES = ("train_gen-00000-of-00001.parquet", "train_sft-00000-of-00001.parquet",
                        "test_gen-00000-of-00001.parquet", "test_sft-00000-of-00001.parquet")

CONVERT_DIR = "results/convert"
CONVERT_DEMO_HF = f"{DEMO_DIR}/llama_hf"
CONVERT_MCORE = f"{CONVERT_DIR}/llama_mcore"
CONVERT_PARITY = f"{CONVERT_DIR}/parity.json"

DEMO_BASE_DIR = f"{DEMO_DIR}/base"
DEMO_BASE_CORPUS = f"{DEMO_BASE_DIR}/train_corpus.npy"

TRAIN_DIR = "results/train"
TRAIN_FILES = ("metrics.json", "mlperf_log.txt", "steps.csv", "eval.csv", "resolved_config.json")
TRAIN_WORKLOADS = ("lora", "pretrain", "sft")
# The folder a training run keeps beside its files: the LoRA/SFT adapter, the pretrained model.
TRAIN_KEPT_DIR = {"lora": "adapter", "pretrain": "checkpoint", "sft": "adapter"}

INFERENCE_DIR = "results/inference"
SCORES_DIR = "results/scores"
COMPLIANCE_DIR = f"{SCORES_DIR}/compliance"
# The MLPerf Training ruleset the llama2_70b_lora logs are checked against (rules/compliance.smk): the checker's.
COMPLIANCE_RULESET = DEFAULT_RULESET
REPORT_DIR = "results/report"
# The MLPerf submission package (results/submission/<submitter>/) and the official tools' verdicts beside it.
SUBMISSION_DIR = "results/submission"
SUBMISSION_MANIFEST = f"{SUBMISSION_DIR}/package.json"
PACKAGE_CHECK = f"{SUBMISSION_DIR}/package_check.json"
SUBMISSION_SUMMARY = f"{SUBMISSION_DIR}/summary.json"
SUBMISSION_SUMMARY_CSV = f"{SUBMISSION_DIR}/summary.csv"


def tokenizer_file(path: str) -> str:
    """A configured tokenizer: tokenizer.json itself or a model folder holding one; empty = the demo tokenizer."""
    if not path:
        return DEMO_TOKENIZER
    return str(Path(path) / "tokenizer.json") if Path(path).is_dir() else path


def quoted_flags(flags: dict[str, Any]) -> str:
    """`--key value` for each entry (True: the bare switch; False/None: left out), values shell-quoted."""
    out = []
    for key, value in flags.items():
        if value is True:
            out.append(f"--{key}")
        elif value not in (False, None):
            out.append(f"--{key} {shlex.quote(str(value))}")
    return " ".join(out)


class Layout:
    """Paths and arguments of one configured DAG. Raises PipelineInputError, naming the key, for a config that the
    schema accepts but the DAG cannot hold (shard counts that do not group, a missing real shard, no UltraChat file)."""

    def __init__(self, config: dict[str, Any], check_inputs: bool = True):
        """check_inputs=False (the planner): no look at the file system; real input folders are not listed."""
        self.config = config
        c4 = config["c4"]
        self.c4_group_size = c4_layout.group_size(c4["train_shards"], c4["train_groups"])
        self.c4_demo = not c4["raw_dir"]
        self.c4_raw_dir = C4_DEMO_RAW_DIR if self.c4_demo else c4["raw_dir"]
        if not self.c4_demo and check_inputs:  # lists the folder only (no data is read): a missing or extra shard fails before any job
            c4_layout.check_raw_dir(self.c4_raw_dir, c4["train_shards"], c4["validation_shards"])
        self._check_govreport()
        self.ultrachat_files = {split: self._ultrachat_files(split) if check_inputs else [] for split in ULTRACHAT_SPLITS}

    # ---- C4 ------------------------------------------------------------------------------------------------------

    def c4_demo_raw(self, split: str) -> list[str]:
        """The generated demo corpus's shards of a split (train or validation), named as the real C4's."""
        n = self.config["c4"][f"{split}_shards"]
        return [f"{C4_DEMO_RAW_DIR}/c4-{split}.{i:05d}-of-{n:05d}.json.gz" for i in range(n)]

    def c4_train_group_shards(self, group: int) -> list[str]:
        c4 = self.config["c4"]
        names = c4_layout.train_group_members(group, c4["train_shards"], c4["train_groups"])
        return [f"{self.c4_raw_dir}/{name}" for name in names]

    def c4_validation_shards(self) -> list[str]:
        return [f"{self.c4_raw_dir}/{name}" for name in c4_layout.validation_members(self.config["c4"]["validation_shards"])]

    def c4_consolidated_names(self) -> list[str]:
        c4 = self.config["c4"]
        names = [c4_layout.consolidated_train_name(k) for k in range(c4["train_groups"])]
        names.append(c4_layout.consolidated_validation_name(c4["validation_docs"]))
        return [name.removesuffix(".json.gz") for name in names]

    @staticmethod
    def c4_prefix(name: str) -> str:
        """The Megatron dataset prefix of a consolidated file (its .bin/.idx/.stats.json)."""
        return f"{C4_TOKENIZED}/{name}_text_document"

    def c4_validation_prefix(self) -> str:
        return self.c4_prefix(f"c4-validation-{self.config['c4']['validation_docs']}-samples.en")

    def c4_targets(self) -> list[str]:
        return [f"{self.c4_prefix(name)}.{ext}" for name in self.c4_consolidated_names() for ext in C4_TOKENIZED_EXTS]

    def c4_tokenizer(self) -> str:
        return tokenizer_file(self.config["c4"]["tokenizer"])

    def c4_tokenize_flags(self) -> str:
        c4 = self.config["c4"]
        return quoted_flags({"bos-token": c4["bos_token"], "eod-token": c4["eod_token"],
                             "append-eod": c4["append_eod"], "add-bos": c4["add_bos"]})

    # ---- GovReport -----------------------------------------------------------------------------------------------

    def _check_govreport(self) -> None:
        gr = self.config["govreport"]
        if gr["source"] == "packed" and not (gr["train"] and gr["validation"]) and not gr["hub_dataset"]:
            raise PipelineInputError("govreport.source 'packed' needs govreport.train and .validation files or "
                                     "govreport.hub_dataset")
        if bool(gr["train"]) != bool(gr["validation"]):
            raise PipelineInputError("govreport.train and govreport.validation must both be set or both be empty")

    def govreport_tokenizer(self) -> str:
        return tokenizer_file(self.config["govreport"]["tokenizer"])

    @staticmethod
    def govreport_npy(split: str) -> str:
        return f"{GOVREPORT_DIR}/{split}.npy"

    def govreport_source_file(self, split: str) -> str:
        """One split as given: a configured file, the hub export, or (raw rows only) the generated demo rows."""
        gr = self.config["govreport"]
        if gr[split]:
            return gr[split]
        if gr["hub_dataset"]:
            return f"{GOVREPORT_DIR}/hub/{split}.parquet"
        return self.govreport_demo_rows(split)

    @staticmethod
    def govreport_demo_rows(split: str) -> str:
        return f"{DEMO_DIR}/govreport/{split}.parquet"

    def govreport_packs_here(self) -> bool:
        return self.config["govreport"]["source"] != "packed"

    def govreport_npy_inputs(self, split: str) -> dict[str, str]:
        if not self.govreport_packs_here():
            return {"data": self.govreport_source_file(split)}
        prefix = f"{GOVREPORT_DIR}/packed/{split}"
        return {"data": f"{prefix}.parquet", "pack_stats": f"{prefix}.stats.json"}

    def govreport_pack_flags(self, split: str) -> str:
        gr = self.config["govreport"]
        validation = split == "validation"
        return quoted_flags({
            "num-proc": gr["validation_num_proc"] if validation else gr["train_num_proc"],
            "batch-size": gr["map_batch_size"], "seq-length": gr["seq_length"], "bos-token": gr["bos_token"],
            "eos-token": gr["eos_token"], "validation": validation})

    def govreport_targets(self) -> list[str]:
        return [f"{GOVREPORT_DIR}/{split}.{ext}" for split in GOVREPORT_SPLITS for ext in ("npy", "stats.json")]

    # ---- OpenOrca ------------------------------------------------------------------------------------------------

    def openorca_parquet(self) -> str:
        return self.config["openorca"]["parquet"] or OPENORCA_DEMO_PARQUET

    def openorca_tokenizer(self) -> str:
        return tokenizer_file(self.config["openorca"]["tokenizer"])

    def openorca_response_init_token(self) -> str:
        """The token appended to tok_input: Llama 2's "▁" (id 29871, as the reference), the byte-level space for the
        demo tokenizer."""
        oo = self.config["openorca"]
        return oo["response_init_token"] or ("▁" if oo["tokenizer"] else "Ġ")

    def openorca_outputs(self) -> dict[str, str]:
        oo = self.config["openorca"]
        return {"pkl": f"{OPENORCA_PREFIX}.sampled_{oo['total_samples']}.pkl",
                "parquet": f"{OPENORCA_PREFIX}.sampled_{oo['total_samples']}.parquet",
                "calibration": f"{OPENORCA_PREFIX}.calibration_{oo['calibration_size']}.pkl",
                "stats": f"{OPENORCA_DIR}/stats.json"}

    # ---- UltraChat -----------------------------------------------------------------------------------------------

    def _ultrachat_files(self, split: str) -> list[str]:
        """The split's files, sorted by name: the demo's, or those of the configured folder (none is a config error)."""
        uc = self.config["ultrachat"]
        if not uc["data_dir"]:
            return [f"{ULTRACHAT_DEMO_DIR}/{n}" for n in ULTRACHAT_DEMO_NAMES if n.startswith(f"{split}_")]
        pattern = str(Path(uc["data_dir"]) / uc[f"{split}_glob"])
        files = sorted(glob.glob(pattern))
        if not files:
            raise PipelineInputError(f"ultrachat.{split}_glob: no file matches {pattern}")
        return files

    def ultrachat_base_tokenizer(self) -> str:
        return tokenizer_file(self.config["ultrachat"]["tokenizer"])

    def ultrachat_tokenizer_flags(self) -> str:
        return "" if self.config["ultrachat"]["add_chatml_tokens"] else "--no-add"

    def ultrachat_pack_flags(self) -> str:
        uc = self.config["ultrachat"]
        return quoted_flags({"seq-length": uc["seq_length"], "chars-per-token": uc["chars_per_token"],
                             "num-of-sequences": uc["num_of_sequences"], "seed": uc["seed"],
                             "no-shuffle": not uc["shuffle"]})

    @staticmethod
    def ultrachat_split(split: str) -> str:
        return f"{ULTRACHAT_DIR}/{split}.parquet"

    def ultrachat_targets(self) -> list[str]:
        out = [f"{ULTRACHAT_DIR}/{split}.{ext}" for split in ULTRACHAT_SPLITS for ext in ("parquet", "stats.json")]
        return [*out, ULTRACHAT_TOKENIZER]

    # ---- conversion, inference -----------------------------------------------------------------------------------

    def convert_hf_checkpoint(self) -> str:
        """The configured HF Llama folder (config.json + safetensors), or the generated tiny demo model."""
        return self.config["convert"]["hf_checkpoint"] or CONVERT_DEMO_HF

    def inference_checkpoint(self) -> str:
        """The configured megatron-core checkpoint (e.g. a LoRA-merged model), or the converted one."""
        return self.config["inference"]["checkpoint"] or CONVERT_MCORE

    def inference_gate(self) -> list[str]:
        """The converted model is used only once its parity check passed; a configured checkpoint has no gate here."""
        return [] if self.config["inference"]["checkpoint"] else [CONVERT_PARITY]

    def inference_samples(self) -> str:
        return self.openorca_outputs()["pkl"]

    # ---- training, scores, report --------------------------------------------------------------------------------

    def train_workloads(self) -> list[str]:
        return [w for w in TRAIN_WORKLOADS if w in self.config["train"]]

    def train_runs(self, workload: str) -> list[str]:
        return [f"{TRAIN_DIR}/{workload}/seed{seed}" for seed in self.config["train"][workload]["seeds"]]

    def train_outputs(self, workload: str) -> list[str]:
        return [f"{run}/{name}" for run in self.train_runs(workload) for name in TRAIN_FILES]

    def compliance_verdicts(self) -> list[str]:
        """One verdict per llama2_70b_lora seed (rules/compliance.smk)."""
        return [f"{COMPLIANCE_DIR}/lora/seed{seed}.json" for seed in self.config["train"]["lora"]["seeds"]]

    def score_train_metrics(self) -> list[str]:
        return [f"{run}/metrics.json" for w in self.train_workloads() for run in self.train_runs(w)]

    def report_run_plots(self) -> list[str]:
        """Loss and throughput figures of every configured training run."""
        return [f"{REPORT_DIR}/train/{w}/seed{seed}/{figure}.svg" for w in self.train_workloads()
                for seed in self.config["train"][w]["seeds"] for figure in ("loss", "throughput")]

    def report_data_stats_inputs(self) -> dict[str, list[str]]:
        """Stats JSONs of every prepared data set; GovReport's packing stats only where this workflow packed it."""
        return {
            "c4": [f"{self.c4_prefix(name)}.stats.json" for name in self.c4_consolidated_names()],
            "govreport": [f"{GOVREPORT_DIR}/{split}.stats.json" for split in GOVREPORT_SPLITS],
            "ultrachat": [f"{ULTRACHAT_DIR}/{split}.stats.json" for split in ULTRACHAT_SPLITS],
            "openorca": [f"{OPENORCA_DIR}/stats.json"],
            "govreport_packed": ([f"{GOVREPORT_DIR}/packed/{split}.stats.json" for split in GOVREPORT_SPLITS]
                                 if self.govreport_packs_here() else []),
        }

    def report_figures(self) -> list[str]:
        return [*self.report_run_plots(), f"{REPORT_DIR}/convert/parity.svg", f"{REPORT_DIR}/data/statistics.svg",
                f"{REPORT_DIR}/data/statistics.csv", f"{REPORT_DIR}/benchmarks/rules.svg",
                f"{REPORT_DIR}/scores/scores.html"]

    # ---- MLPerf submission package ------------------------------------------------------------------------------

    def submission_runs(self, benchmarks: dict[str, str]) -> dict[str, list[str]]:
        """Benchmark -> run folders (in seed order) of each workload whose recipe's benchmark (`benchmarks`: workload
        -> TrainConfig.benchmark_name) is one of the submission ruleset's; SFT and the demo base model are not."""
        from mlperf_logging.benchmark_meta import get_allowed_benchmarks

        ruleset = self.config["submission"]["ruleset"]
        try:
            allowed = set(get_allowed_benchmarks("training", ruleset))
        except ValueError as err:
            raise PipelineInputError(f"submission.ruleset: {err}") from None
        runs: dict[str, list[str]] = {}
        for workload, benchmark in benchmarks.items():
            if benchmark in runs:
                raise PipelineInputError(f"train.{workload}: a second workload for benchmark {benchmark}")
            if benchmark in allowed:
                runs[benchmark] = self.train_runs(workload)
        return runs

    def submission_folder(self) -> str:
        return f"{SUBMISSION_DIR}/{self.config['submission']['submitter']}"

    @staticmethod
    def submission_inputs(runs: dict[str, list[str]]) -> list[str]:
        return [f"{run}/{name}" for folders in runs.values() for run in folders
                for name in ("mlperf_log.txt", "resolved_config.json")]

    def submission_flags(self, runs: dict[str, list[str]]) -> str:
        """The package builder's arguments: the submission section, the runs, the workflow's resolved config."""
        sub = self.config["submission"]
        flags = quoted_flags({key.replace("_", "-"): sub[key] for key in
                              ("submitter", "system", "division", "ruleset", "implementation")})
        runs_arg = " ".join(shlex.quote(f"{b}={run}") for b, folders in runs.items() for run in folders)
        return (f"{flags} --system-desc {shlex.quote(json.dumps(sub['system_desc']))} --run {runs_arg}"
                f" --workflow-config {shlex.quote(json.dumps(self.config, sort_keys=True))}")

    def package_check_flags(self) -> str:
        return quoted_flags({"ruleset": self.config["submission"]["ruleset"],
                             "rcp-bypass": self.config["submission"]["rcp_bypass"]})

    @staticmethod
    def submission_targets() -> list[str]:
        return [PACKAGE_CHECK, SUBMISSION_SUMMARY, SUBMISSION_SUMMARY_CSV]

    # ---- targets -------------------------------------------------------------------------------------------------

    def stage_targets(self) -> list[str]:
        """The final outputs of every stage but the report (whose benchmark figure waits for all of them, so that
        every `benchmark:` file of the run exists when it reads RULE_BENCHMARK_DIR)."""
        out = [*self.c4_targets(), *self.govreport_targets(), *self.ultrachat_targets(),
               *self.openorca_outputs().values(), CONVERT_PARITY]
        for workload in self.train_workloads():
            out += self.train_outputs(workload)
        out += [f"{INFERENCE_DIR}/rouge.json", f"{SCORES_DIR}/scores.csv", f"{SCORES_DIR}/scores.md"]
        return out + self.compliance_verdicts() + self.submission_targets()

    def targets(self) -> list[str]:
        """What `rule all` asks for."""
        return [*self.stage_targets(), *self.report_figures()]
