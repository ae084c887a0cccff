"""The DAG's GPU-side jobs, derived at parse time from each training config: the TrainConfig every training job runs,
its launch line, the conversion layout the trainer needs, and what each job asks Slurm for. The recipe states the
parallel layout and the precision once; `nproc_per_node` x `nodes` states the GPUs once; everything else follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.dag.layout import (CONVERT_MCORE, CONVERT_PARITY, DEMO_BASE_CORPUS, GOVREPORT_DIR, TRAIN_DIR,
                                         ULTRACHAT_TOKENIZER, Layout)
from workflow_scripts.train.train_config import TrainConfig, build_config

# Host memory a job asks for per GPU it uses: a DGX H100 node's 2 TB for 8 GPUs, leaving half to the page cache.
HOST_MEM_MB_PER_GPU = 120_000
# A job of a whole GPU node's host memory for one GPU: the parity check holds two fp32 copies of the model (70B:
# ~560 GB).
NODE_MEM_MB = 8 * HOST_MEM_MB_PER_GPU
# CPU-sized jobs (the demo's tiny Llama peaks below 2 GB): a training job, and a parity check or generation job.
CPU_JOB_MEM_MB = 8_000
CPU_MODEL_JOB_MEM_MB = 4096


def uses_gpus(cfg: TrainConfig) -> bool:
    """The Transformer Engine spec is the GPU layout; the local spec runs on CPUs (the demo)."""
    return cfg.spec == "te"


def _dump(fields: dict[str, Any]) -> str:
    return yaml.safe_dump(fields, default_flow_style=True, width=10**6).strip()


@dataclass(frozen=True)
class TrainJob:
    """One workload's training jobs (one per seed)."""

    workload: str
    section: dict[str, Any]
    inputs: dict[str, Any]            # the rule's named inputs, from the same paths as `data`
    data: dict[str, Any]              # TrainConfig fields naming the job's files
    cfg: TrainConfig                  # of the first seed: layout, precision, device

    def fields(self, seed: int) -> dict[str, Any]:
        return {**self.section["overrides"], "seed": int(seed), **self.data}

    def overrides(self, seed: int) -> str:
        """TrainConfig fields of one seed's job as the YAML string the trainer's --overrides-inline reads."""
        return _dump(self.fields(seed))

    @property
    def nodes(self) -> int:
        return self.section["nodes"]

    @property
    def nproc_per_node(self) -> int:
        """torchrun processes per node: as configured, else the smallest world the recipe's layout holds."""
        return self.section.get("nproc_per_node") or self.cfg.tensor_parallel * self.cfg.pipeline_parallel

    @property
    def gpus(self) -> int:
        return self.nodes * self.nproc_per_node if uses_gpus(self.cfg) else 0

    def launcher(self) -> str:
        """One node: `torchrun --standalone` in the job's single step. Several nodes (Slurm): the rule has mpi="srun",
        so Snakemake does not wrap it in `srun -n1`, and it starts one torchrun per node itself, which meet through a
        c10d rendezvous on the job's first node (torchtitan's launch)."""
        if self.nodes == 1:
            return f"torchrun --standalone --nproc-per-node {self.nproc_per_node}"
        head = "$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)"
        ignore_usr1 = """sh -c 'trap "" USR1; exec "$@"' sh"""  # see the walltime-signal note in rules/common.smk
        # Site options of this srun, e.g. enroot/pyxis: --container-image=IMG.sqsh --container-mounts=/lustre:/lustre
        extra = f"{self.section['srun_extra']} " if self.section["srun_extra"] else ""
        return (f"srun --nodes {self.nodes} --ntasks-per-node 1 {extra}{ignore_usr1} torchrun --nnodes {self.nodes}"
                f" --nproc-per-node {self.nproc_per_node} --rdzv-backend c10d --rdzv-endpoint {head}:29500"
                f" --rdzv-id $SLURM_JOB_ID")

    def resources(self) -> dict[str, Any]:
        """What each job asks Slurm for: its GPUs (0 on CPUs, so a CPU-sized job requests none), host memory and
        walltime; several nodes also mpi="srun" with one task per node (the rule calls srun itself). One node has no
        mpi resource at all (None drops it), so the job runs in an `srun -n1` step that --signal reaches."""
        res: dict[str, Any] = {"gpu": self.gpus, "runtime": self.section["walltime_minutes"], "nodes": self.nodes,
                               "mem_mb": self.nproc_per_node * HOST_MEM_MB_PER_GPU if self.gpus else CPU_JOB_MEM_MB,
                               "mpi": None}
        if self.nodes > 1:
            # tasks, not tasks_per_node (the plugin refuses 1 per node); tasks_per_gpu 0 keeps --ntasks-per-gpu off.
            res.update(mpi="srun", tasks=self.nodes, tasks_per_gpu=0)
        return res


def _data_inputs(layout: Layout, workload: str) -> dict[str, Any]:
    """The files a workload's job reads, by the TrainConfig field that names them."""
    train = layout.config["train"][workload]
    if workload == "pretrain":
        prefixes = [layout.c4_prefix(name) for name in train["blend"]]
        return {"train_data": prefixes, "train_weights": list(train["weights"]),
                "validation_data": layout.c4_validation_prefix(),
                "index_cache": f"{TRAIN_DIR}/pretrain/index_cache"}
    if workload == "lora":
        return {"train_data": [layout.govreport_npy("train")], "validation_data": layout.govreport_npy("validation"),
                "checkpoint": CONVERT_MCORE}
    return {"train_data": [layout.ultrachat_split("train")], "validation_data": layout.ultrachat_split("test"),
            "checkpoint": CONVERT_MCORE, "vocab_from_tokenizer": ULTRACHAT_TOKENIZER}


def rule_inputs(workload: str, data: dict[str, Any]) -> dict[str, Any]:
    """The rule's inputs, from the same paths the trainer is given."""
    if workload == "pretrain":
        validation = data["validation_data"]
        return {"train": [f"{p}.{ext}" for p in data["train_data"] for ext in ("bin", "idx")],
                "validation": [f"{validation}.bin", f"{validation}.idx"],
                "index_cache": f"{data['index_cache']}.json"}
    out = {"train": data["train_data"][0], "validation": data["validation_data"], "checkpoint": data["checkpoint"],
           "parity": CONVERT_PARITY}  # nothing trains on a conversion that failed its logits check
    if "vocab_from_tokenizer" in data:  # ChatML tokens added: the model's rows grow to it
        out["tokenizer"] = data["vocab_from_tokenizer"]
    return out


def _build(workload: str, recipe: str, fields: dict[str, Any], seed: int) -> TrainConfig:
    try:
        return build_config(recipe, fields)
    except PipelineInputError as err:
        raise PipelineInputError(f"train.{workload} (recipe {recipe!r}, seed {seed}): {err}") from err


def train_job(layout: Layout, workload: str) -> TrainJob:
    """A workload's jobs, every seed's TrainConfig built now: `snakemake -n` refuses what the job would (an unknown
    recipe or override key, a bad value, weights that do not match the blend, a layout the launch cannot hold)."""
    section = layout.config["train"][workload]
    data = _data_inputs(layout, workload)
    job = TrainJob(workload, section, rule_inputs(workload, data), data, None)  # type: ignore[arg-type]
    cfgs = [_build(workload, section["recipe"], job.fields(seed), seed) for seed in section["seeds"]]
    job = TrainJob(workload, section, job.inputs, data, cfgs[0])
    world = job.nproc_per_node * job.nodes
    if world % (job.cfg.tensor_parallel * job.cfg.pipeline_parallel):
        raise PipelineInputError(
            f"train.{workload}: tensor_parallel x pipeline_parallel = {job.cfg.tensor_parallel} x "
            f"{job.cfg.pipeline_parallel} does not divide the {world} processes of nproc_per_node x nodes")
    return job


# The data section whose packed rows a workload trains on, and that section's row length key.
PACKED_DATA = {"lora": "govreport", "sft": "ultrachat"}


def data_length_mismatches(layout: Layout, jobs: dict[str, TrainJob]) -> list[str]:
    """Packed rows that are not as long as the recipe's sequence: the training job would refuse them at its start.
    A warning at parse time, not an error: a DAG that only prepares data at another length is a valid run."""
    out = []
    for job in jobs.values():
        section = PACKED_DATA.get(job.workload)
        if section and layout.config[section]["seq_length"] != job.cfg.seq_length:
            out.append(f"{section}.seq_length = {layout.config[section]['seq_length']} but train.{job.workload} "
                       f"(recipe {job.cfg.recipe!r}) trains on sequences of {job.cfg.seq_length}: its job would "
                       f"refuse the rows; make them equal")
    return out


def train_jobs(layout: Layout) -> dict[str, TrainJob]:
    return {w: train_job(layout, w) for w in layout.train_workloads()}


def index_cache_overrides(job: TrainJob) -> str:
    """The pretraining index cache is keyed by the dataset description, which includes the seed: the first seed's."""
    return job.overrides(job.section["seeds"][0])


def demo_base_overrides(layout: Layout) -> str:
    """The demo base model (recipe demo_base_cpu): shape from demo.llama_*, positions for the GovReport rows."""
    demo, seq = layout.config["demo"], layout.config["govreport"]["seq_length"]
    heads, hidden = demo["llama_num_heads"], demo["llama_hidden_size"]
    fields = {
        "train_data": [DEMO_BASE_CORPUS], "validation_data": f"{GOVREPORT_DIR}/validation.npy", "seed": demo["seed"],
        "seq_length": seq, "max_steps": demo["base_model_steps"],
        "model_shape": {
            "vocab_size": demo["llama_vocab_size"], "hidden_size": hidden,
            "intermediate_size": demo["llama_intermediate_size"], "num_layers": demo["llama_num_layers"],
            "num_attention_heads": heads, "num_query_groups": demo["llama_num_kv_heads"], "head_dim": hidden // heads,
            "max_position_embeddings": seq,
        },
    }
    try:
        build_config("demo_base_cpu", fields)
    except PipelineInputError as err:
        raise PipelineInputError(f"demo (the demo base model's shape): {err}") from err
    return _dump(fields)


@dataclass(frozen=True)
class Conversion:
    """The HF -> megatron-core conversion the training jobs need: their layout and layer spec, and whether the
    model's jobs (parity check, generation) run on GPUs."""

    tp: int
    pp: int
    spec: str

    @property
    def on_gpus(self) -> bool:
        return self.spec == "te"


def conversion(layout: Layout, jobs: dict[str, TrainJob]) -> Conversion:
    """From the LoRA training config (else SFT's); `convert.tp/pp/spec`, where set, must agree with it."""
    given = {k: layout.config["convert"].get(k) for k in ("tp", "pp", "spec")}
    source = jobs.get("lora") or jobs.get("sft")
    if source is None:
        return Conversion(given["tp"] or 1, given["pp"] or 1, given["spec"] or "local")
    derived = {"tp": source.cfg.tensor_parallel, "pp": source.cfg.pipeline_parallel, "spec": source.cfg.spec}
    for key, value in given.items():
        if value is not None and value != derived[key]:
            raise PipelineInputError(
                f"convert.{key} = {value!r} but train.{source.workload} (recipe {source.cfg.recipe!r}) trains at "
                f"{key} {derived[key]!r}; leave convert.{key} unset to take the training config's")
    return Conversion(**derived)


def generate_resources(layout: Layout, conv: Conversion) -> dict[str, Any]:
    """Generation: one torchrun process per GPU (inference.nproc_per_node) where the model is GPU-sized."""
    inference = layout.config["inference"]
    gpus = inference["nproc_per_node"] if conv.on_gpus else 0
    return {"gpu": gpus, "mem_mb": gpus * HOST_MEM_MB_PER_GPU if gpus else CPU_MODEL_JOB_MEM_MB,
            "runtime": inference["walltime_minutes"]}


def verify_resources(conv: Conversion) -> dict[str, Any]:
    """The parity check: one GPU and a node's host memory for a GPU-sized model, a CPU-sized job otherwise."""
    return {"gpu": 1, "mem_mb": NODE_MEM_MB} if conv.on_gpus else {"gpu": 0, "mem_mb": CPU_MODEL_JOB_MEM_MB}
