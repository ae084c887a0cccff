# Paths, configs and launchers of the training stage (rules/train.smk).
import signal

import yaml

# Walltime signal (profiles/slurm: --signal=USR1@600, no "B:"): Slurm sends it to every process of the job's steps.
# Tested on Slurm 22.05 (tests/test_slurm_resume.py): USR1's default action kills the step's snakemake, bash and
# torchrun at once; the step then ends (a cgroup cluster kills the trainer mid-save) and the job fails before the
# checkpoint is complete. So snakemake ignores USR1 here; SIG_IGN is inherited across fork and exec by the rule's
# shell and torchrun, and only the trainer installs a handler (save, exit 75, the retry resumes). Ranks that srun
# starts on other nodes inherit nothing: the multi-node launcher ignores USR1 itself (train_launcher).
signal.signal(signal.SIGUSR1, signal.SIG_IGN)

TRAIN_DIR = "results/train"
TRAIN_FILES = ("metrics.json", "mlperf_log.txt", "steps.csv", "eval.csv", "resolved_config.json")


wildcard_constraints:
    seed=r"\d+",


def train_runs(workload):
    return [f"{TRAIN_DIR}/{workload}/seed{seed}" for seed in config["train"][workload]["seeds"]]


def train_outputs(workload):
    return [f"{run}/{name}" for run in train_runs(workload) for name in TRAIN_FILES]


def pretrain_prefixes(wildcards=None):
    return [f"results/c4/tokenized/{name}_text_document" for name in config["train"]["pretrain"]["blend"]]


def pretrain_inputs(wildcards=None):
    return [f"{p}.{ext}" for p in pretrain_prefixes() for ext in ("bin", "idx")]


def pretrain_validation_prefix(wildcards=None):
    return f"results/c4/tokenized/c4-validation-{config['c4']['validation_docs']}-samples.en_text_document"


def train_overrides(workload, wildcards):
    """TrainConfig fields from config.yaml plus the data and model paths the DAG provides, as a YAML string."""
    section = config["train"][workload]
    fields = dict(section.get("overrides") or {})
    fields["seed"] = int(wildcards.seed)
    if workload == "pretrain":
        fields["train_data"] = pretrain_prefixes()
        fields["train_weights"] = list(section["weights"])
        fields["validation_data"] = pretrain_validation_prefix()
        fields["index_cache"] = f"{TRAIN_DIR}/pretrain/index_cache"
    elif workload == "lora":
        fields["train_data"] = ["results/govreport/train.npy"]
        fields["validation_data"] = "results/govreport/validation.npy"
        fields["checkpoint"] = CONVERT_MCORE
    elif workload == "sft":
        fields["train_data"] = ["results/ultrachat/train.parquet"]
        fields["validation_data"] = "results/ultrachat/test.parquet"
        fields["checkpoint"] = CONVERT_MCORE
        fields["vocab_from_tokenizer"] = "results/ultrachat/tokenizer/tokenizer.json"
    return yaml.safe_dump(fields, default_flow_style=True, width=10**6).strip()


def sft_overrides(wildcards):
    return train_overrides("sft", wildcards)


def sft_launcher(wildcards=None):
    return train_launcher("sft")


def sft_checkpoint_dir(wildcards):
    return f"checkpoints/sft/seed{wildcards.seed}"


def lora_overrides(wildcards):
    return train_overrides("lora", wildcards)


def pretrain_overrides(wildcards):
    return train_overrides("pretrain", wildcards)


def index_cache_overrides(wildcards=None):
    """The cache is keyed by the dataset description, which includes the seed: build it for the first seed."""
    first = type("Seed", (), {"seed": config["train"]["pretrain"]["seeds"][0]})
    return train_overrides("pretrain", first)


def lora_checkpoint_dir(wildcards):
    return f"checkpoints/lora/seed{wildcards.seed}"


def pretrain_checkpoint_dir(wildcards):
    return f"checkpoints/pretrain/seed{wildcards.seed}"


def train_nodes(workload):
    return config["train"][workload].get("nodes", 1)


def train_launcher(workload):
    """One node: `torchrun --standalone` in the job's single step. Several nodes (Slurm): the rule has mpi="srun", so
    Snakemake does not wrap it in `srun -n1`, and it starts one torchrun per node itself, which meet through a c10d
    rendezvous on the job's first node (torchtitan's launch; never `tasks` on a torchrun rule)."""
    nproc = config["train"][workload].get("nproc_per_node", 1)
    nodes = train_nodes(workload)
    if nodes == 1:
        return f"torchrun --standalone --nproc-per-node {nproc}"
    head = "$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)"
    ignore_usr1 = """sh -c 'trap "" USR1; exec "$@"' sh"""  # see the signal note at the top of this file
    # Site options of this srun, e.g. enroot/pyxis: --container-image=IMG.sqsh --container-mounts=/lustre:/lustre
    extra = config["train"][workload].get("srun_extra", "")
    extra = f"{extra} " if extra else ""
    return (f"srun --nodes {nodes} --ntasks-per-node 1 {extra}{ignore_usr1} torchrun --nnodes {nodes}"
            f" --nproc-per-node {nproc} --rdzv-backend c10d --rdzv-endpoint {head}:29500 --rdzv-id $SLURM_JOB_ID")


def train_mpi(workload):
    """Several nodes: "srun" (the rule's shell calls srun itself). One node: no mpi resource at all (None drops it; ""
    would not), so the Slurm job step plugin runs the job in an `srun -n1` step, which --signal reaches: a job
    without steps never gets the walltime signal."""
    return "srun" if train_nodes(workload) > 1 else None


def lora_launcher(wildcards=None):
    return train_launcher("lora")


def pretrain_launcher(wildcards=None):
    return train_launcher("pretrain")


DEMO_BASE_CORPUS = f"{DEMO_DIR}/base/train_corpus.npy"


def demo_base_overrides(wildcards=None):
    """Shape of the demo base model from config (demo.llama_*), positions for the GovReport rows."""
    import yaml

    demo = config["demo"]
    heads = demo.get("llama_num_heads", 4)
    hidden = demo.get("llama_hidden_size", 64)
    fields = {
        "train_data": [DEMO_BASE_CORPUS],
        "validation_data": "results/govreport/validation.npy",
        "seed": demo.get("seed", 1234),
        "seq_length": config["govreport"]["seq_length"],
        "max_steps": demo.get("base_model_steps", 150),
        "model_shape": {
            "vocab_size": demo["llama_vocab_size"], "hidden_size": hidden,
            "intermediate_size": demo.get("llama_intermediate_size", 160),
            "num_layers": demo.get("llama_num_layers", 2), "num_attention_heads": heads,
            "num_query_groups": demo.get("llama_num_kv_heads", 2), "head_dim": hidden // heads,
            "max_position_embeddings": config["govreport"]["seq_length"],
        },
    }
    return yaml.safe_dump(fields, default_flow_style=True, width=10**6).strip()


def _check_training_configs():
    """Build every training job's TrainConfig now, so that `snakemake -n` refuses what the job would: an unknown
    recipe or override key, a bad value, train weights that do not match the blend, a layout the launch cannot hold."""
    from types import SimpleNamespace

    from workflow_scripts.core.errors import PipelineInputError
    from workflow_scripts.train.train_config import build_config

    for workload, section in config["train"].items():
        for seed in section["seeds"]:
            fields = yaml.safe_load(train_overrides(workload, SimpleNamespace(seed=seed)))
            try:
                cfg = build_config(section["recipe"], fields)
            except PipelineInputError as err:
                _config_error(f"train.{workload} (recipe {section['recipe']!r}, seed {seed}): {err}")
            world = section.get("nproc_per_node", 1) * train_nodes(workload)
            if world % (cfg.tensor_parallel * cfg.pipeline_parallel):
                _config_error(f"train.{workload}: tensor_parallel x pipeline_parallel = {cfg.tensor_parallel} x "
                              f"{cfg.pipeline_parallel} does not divide the {world} processes of nproc_per_node x nodes")
    try:
        build_config("demo_base_cpu", yaml.safe_load(demo_base_overrides()))
    except PipelineInputError as err:
        _config_error(f"demo (the demo base model's shape): {err}")


_check_training_configs()
