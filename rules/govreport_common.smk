# Helpers of rules/govreport.smk (input functions, params, config checks); kept apart as snakemake --lint asks.
# config govreport.source: "raw" runs all three steps; "packed" starts from the published packed parquet files.

GOVREPORT_SPLITS = ["train", "validation"]


wildcard_constraints:
    govreport_split=r"train|validation",


def _govreport_check_config():
    gr = config["govreport"]
    if gr["source"] == "packed" and not (gr["train"] and gr["validation"]) and not gr["hub_dataset"]:
        _config_error("govreport.source 'packed' needs govreport.train and .validation files or govreport.hub_dataset")
    if bool(gr["train"]) != bool(gr["validation"]):
        _config_error("govreport.train and govreport.validation must both be set or both be empty")


_govreport_check_config()


def govreport_tokenizer(wildcards=None):
    """The configured tokenizer.json (the Llama 2 tokenizer for MLPerf), or the demo tokenizer."""
    path = config["govreport"]["tokenizer"]
    if not path:
        return f"{DEMO_DIR}/tokenizer/tokenizer.json"
    return str(Path(path) / "tokenizer.json") if Path(path).is_dir() else path


def govreport_source_file(wildcards):
    """One split as given: a configured file, the hub export, or (raw rows only) the generated demo rows."""
    gr = config["govreport"]
    if gr[wildcards.govreport_split]:
        return gr[wildcards.govreport_split]
    if gr["hub_dataset"]:
        return f"results/govreport/hub/{wildcards.govreport_split}.parquet"
    return f"{DEMO_DIR}/govreport/{wildcards.govreport_split}.parquet"


def govreport_npy_inputs(wildcards):
    if config["govreport"]["source"] == "packed":
        return {"data": govreport_source_file(wildcards)}
    prefix = f"results/govreport/packed/{wildcards.govreport_split}"
    return {"data": f"{prefix}.parquet", "pack_stats": f"{prefix}.stats.json"}


def govreport_pack_stats_flag(wildcards, input):
    return f"--pack-stats {input.pack_stats}" if "pack_stats" in input.keys() else ""


def govreport_pack_flags(wildcards):
    gr = config["govreport"]
    validation = wildcards.govreport_split == "validation"
    num_proc = gr["validation_num_proc"] if validation else gr["train_num_proc"]
    flags = [f"--num-proc {num_proc}", f"--batch-size {gr['map_batch_size']}", f"--seq-length {gr['seq_length']}"]
    flags += [f"--bos-token '{gr['bos_token']}'", f"--eos-token '{gr['eos_token']}'"]
    if validation:
        flags.append("--validation")
    return " ".join(flags)


