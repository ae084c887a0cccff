# Paths, inputs and labels of the report stage (rules/report.smk): the figures `snakemake --report` shows.
REPORT_DIR = "results/report"
REPORT_WORKLOADS = [w for w in ("lora", "pretrain", "sft") if w in config["train"]]
# Every final output of the stages included before this file: the benchmark figure waits for all of them, so that
# every `benchmark:` file of the run exists when it reads RULE_BENCHMARK_DIR.
REPORT_UPSTREAM = list(ALL_TARGETS)


wildcard_constraints:
    report_workload="|".join(REPORT_WORKLOADS),


def report_run_plots():
    """Loss and throughput figures of every configured training run."""
    return [
        f"{REPORT_DIR}/train/{workload}/seed{seed}/{figure}.svg"
        for workload in REPORT_WORKLOADS
        for seed in config["train"][workload]["seeds"]
        for figure in ("loss", "throughput")
    ]


def report_data_stats_inputs(wildcards=None):
    """Stats JSONs of every prepared data set; GovReport's packing stats only where this workflow packed it."""
    inputs = {
        "c4": [f"results/c4/tokenized/{name}_text_document.stats.json" for name in c4_consolidated_names()],
        "govreport": [f"results/govreport/{split}.stats.json" for split in GOVREPORT_SPLITS],
        "ultrachat": [f"results/ultrachat/{split}.stats.json" for split in ULTRACHAT_SPLITS],
        "openorca": [f"{OPENORCA_DIR}/stats.json"],
        "govreport_packed": [],
    }
    if config["govreport"]["source"] != "packed":
        inputs["govreport_packed"] = [f"results/govreport/packed/{split}.stats.json" for split in GOVREPORT_SPLITS]
    return inputs


def report_demo_seed(wildcards=None):
    return str(config["demo"].get("seed", 1234))
