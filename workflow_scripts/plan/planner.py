"""Plan a run before submitting it: every job of `snakemake -n` with its partition, nodes x GPUs and walltime (as the
profile sets them), and the GPU-hours of each training job from model FLOPs, as a Markdown table.

    python -m workflow_scripts.plan --configfile configs/llama31_405b_pretrain.yaml --profile profiles/slurm

The job list is Snakemake's own dry-run (`snakemake -n -p`), so the profile's default-resources / set-resources and the
rules' input functions are applied exactly as in the real run; nothing is read from the data (placeholder inputs do).
Training FLOPs: 6 x params x tokens (dense forward + backward, attention's seq^2 term and activation recompute left
out; LoRA counted like full training, as its backward still runs through every frozen weight). Tokens = samples x
seq_length, samples = the MLPerf RCP mean samples to converge for the recipe's benchmark and GBS (`plan.tokens: rcp`,
max_steps x GBS where no RCP is known) or the upper bound max_steps x GBS (`plan.tokens: max_steps`).
GPU-hours = FLOPs / (plan.mfu x plan.peak_tflops x 1e12) / 3600.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from workflow_scripts.core.atomic import atomic_open
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.config_check import validate_config
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.dag.layout import Layout
from workflow_scripts.plan.rcp import rcp_mean_samples
from workflow_scripts.plan.generation_estimate import projection_lines
from workflow_scripts.dag.train_jobs import train_job
from workflow_scripts.model.lora_param_count import linear_shapes
from workflow_scripts.train.train_config import TrainConfig, build_config

# meta-llama/Llama-2-70b-hf: the LoRA/SFT recipes start from a checkpoint and carry no shape of their own.
LLAMA2_70B_SHAPE = dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_layers=80,
                        num_attention_heads=64, num_query_groups=8, head_dim=128)

# A training job's rule (rules/train.smk): train_<workload>, one job per seed.
TRAIN_RULE = re.compile(r"^train_(\w+)$")


@dataclass
class Job:
    rule: str
    wildcards: str = ""
    resources: dict[str, str] = field(default_factory=dict)
    shell: str = ""


@dataclass(frozen=True)
class TrainEstimate:
    recipe: str
    params: int
    shape_from: str
    samples: float
    samples_from: str
    tokens: float
    gpu_hours: float


# ---- dry-run output -----------------------------------------------------------------------------------------------

def _resources(text: str) -> dict[str, str]:
    """`tmpdir=/tmp, mem_mb=960000, slurm_extra=--signal=USR1@600` -> dict (values may hold '=' but not ', k=')."""
    return {k: v.strip() for k, v in re.findall(r"(\w+)=(.*?)(?=, \w+=|$)", text)}


def parse_dry_run(text: str) -> list[Job]:
    """Jobs of `snakemake -n -p` output: blocks starting `rule X:` / `localrule X:` with indented fields and a
    `Shell command:` line (None for target-only rules)."""
    jobs: list[Job] = []
    current: Job | None = None
    for line in text.splitlines():
        head = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if head:
            current = Job(rule=head.group(1))
            jobs.append(current)
        elif current is None:
            continue
        elif line.startswith("    wildcards: "):
            current.wildcards = line.split(": ", 1)[1]
        elif line.startswith("    resources: "):
            current.resources = _resources(line.split(": ", 1)[1])
        elif line.startswith("Shell command: "):
            current.shell = line.split(": ", 1)[1]
            current = None
        elif not line.strip():
            current = None
    if not jobs and "Nothing to be done" not in text:
        raise PipelineInputError("no jobs found in the dry-run output (was it `snakemake -n -p`?)")
    return jobs


def dry_run(workdir: Path, configfiles: Sequence[str], profile: str, targets: Sequence[str], forceall: bool) -> str:
    # Targets first: --configfile takes every following word.
    cmd = [str(Path(sys.executable).with_name("snakemake")), *targets, "-n", "-p"]
    if profile:
        cmd += ["--profile", profile]
    if configfiles:
        cmd += ["--configfile", *configfiles]
    if forceall:
        cmd.append("--forceall")
    # The Snakefile imports workflow_scripts: the one of this workflow folder, not an installed copy.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(workdir), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise PipelineInputError(f"snakemake -n failed ({' '.join(cmd[1:])}):\n" + "\n".join(tail))
    return proc.stdout + proc.stderr


# ---- resources ----------------------------------------------------------------------------------------------------

def nodes_and_gpus(resources: dict[str, str]) -> tuple[int, int]:
    """(nodes, GPUs per node): `gres: gpu[:type]:N` is per node, `gpu`/`gpus` (sbatch --gpus) per job."""
    nodes = int(resources.get("nodes") or 1)
    gres = re.match(r"^gpu(?::[\w.-]+)?:(\d+)$", resources.get("gres", ""))
    if gres:
        return nodes, int(gres.group(1))
    total = int(resources.get("gpu") or resources.get("gpus") or 0)
    return nodes, math.ceil(total / nodes)


def runtime_minutes(resources: dict[str, str]) -> int:
    value = resources.get("runtime", "")
    return int(value) if value.isdigit() else 0


# ---- model FLOPs --------------------------------------------------------------------------------------------------

def llama_params(shape: dict[str, Any]) -> int:
    """Parameters of a Llama (untied embedding and output layer, RMSNorm weights, no biases)."""
    hidden, vocab = shape["hidden_size"], shape["vocab_size"]
    heads = shape["num_attention_heads"]
    linears = linear_shapes(hidden, heads, shape.get("num_query_groups", heads), shape["intermediate_size"],
                            shape.get("head_dim"))
    # linear_fc1 holds gate and up (2 x ffn outputs): the three MLP matrices.
    per_layer = sum(i * o for i, o in linears.values()) + 2 * hidden
    return shape["num_layers"] * per_layer + 2 * vocab * hidden + hidden


def _hf_shape(folder: str) -> dict[str, Any] | None:
    """The shape in an HF config.json, or None when there is none (or a placeholder) to read."""
    try:
        hf = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(hf, dict) or "hidden_size" not in hf:
        return None
    heads = hf["num_attention_heads"]
    return dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
                num_layers=hf["num_hidden_layers"], num_attention_heads=heads,
                num_query_groups=hf.get("num_key_value_heads", heads),
                head_dim=hf.get("head_dim") or hf["hidden_size"] // heads)


def model_shape(cfg: TrainConfig, config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The trained model's shape and where it came from: the recipe, the HF checkpoint to be converted, the demo base
    model's config, or (a real checkpoint not readable here) Llama-2-70B."""
    if cfg.model_shape:
        return dict(cfg.model_shape), "recipe"
    hf = config.get("convert", {}).get("hf_checkpoint", "")
    if not hf:
        demo = config["demo"]
        return dict(vocab_size=demo["llama_vocab_size"], hidden_size=demo["llama_hidden_size"],
                    intermediate_size=demo["llama_intermediate_size"], num_layers=demo["llama_num_layers"],
                    num_attention_heads=demo["llama_num_heads"], num_query_groups=demo["llama_num_kv_heads"]), "demo"
    shape = _hf_shape(hf)
    return (shape, "config.json") if shape else (dict(LLAMA2_70B_SHAPE), "Llama-2-70B")


def train_samples(cfg: TrainConfig, basis: str) -> tuple[float, str]:
    rcp = rcp_mean_samples(cfg.benchmark_name, cfg.global_batch_size)
    if basis == "rcp" and rcp is not None:
        return rcp, "RCP mean"
    return float(cfg.max_steps * cfg.global_batch_size), "max_steps"


def gpu_hours(params: int, tokens: float, mfu: float, peak_tflops: float) -> float:
    return 6.0 * params * tokens / (mfu * peak_tflops * 1e12) / 3600.0


def train_estimate(job: Job, config: dict[str, Any]) -> TrainEstimate | None:
    """The estimate of a training job, from the TrainConfig the workflow builds for its workload and seed (the same
    function the rule's arguments come from: workflow_scripts/dag/train_jobs.py)."""
    rule = TRAIN_RULE.match(job.rule)
    seed = re.search(r"\bseed=(\d+)", job.wildcards)
    if not rule or not seed or rule.group(1) not in config.get("train", {}):
        return None
    layout = Layout(config, check_inputs=False)
    cfg = build_config(config["train"][rule.group(1)]["recipe"], train_job(layout, rule.group(1)).fields(int(seed.group(1))))
    shape, shape_from = model_shape(cfg, config)
    if cfg.vocab_size:
        shape["vocab_size"] = max(shape["vocab_size"], cfg.vocab_size)
    plan = config["plan"]
    samples, samples_from = train_samples(cfg, plan["tokens"])
    tokens = samples * cfg.seq_length
    params = llama_params(shape)
    return TrainEstimate(cfg.recipe, params, shape_from, samples, samples_from, tokens,
                         gpu_hours(params, tokens, plan["mfu"], plan["peak_tflops"]))


# ---- config and table ---------------------------------------------------------------------------------------------

def load_config(workdir: Path, configfiles: Sequence[str]) -> dict[str, Any]:
    """config.yaml updated by each --configfile in order (as Snakemake merges them), validated, defaults filled."""
    from snakemake.utils import update_config

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for name in configfiles:
        path = Path(name) if Path(name).is_absolute() else workdir / name
        try:
            update_config(config, yaml.safe_load(path.read_text()) or {})
        except OSError as err:
            raise PipelineInputError(f"--configfile {name}: {err.strerror}") from err
    validate_config(config, workdir / "schemas/config.schema.yaml")
    return config


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _hours(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}" if minutes else "-"


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def ordered(jobs: Sequence[Job]) -> list[Job]:
    """Rules in the order the dry run first names them (its listing is not execution order), wildcards naturally."""
    first: dict[str, int] = {}
    for job in jobs:
        first.setdefault(job.rule, len(first))
    return sorted(jobs, key=lambda j: (first[j.rule], _natural(j.wildcards)))


def plan_rows(jobs: Sequence[Job], config: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows, totals = [], {"jobs": 0, "train_gpu_hours": 0.0, "gpu_alloc_hours": 0.0}
    for job in ordered(jobs):
        nodes, per_node = nodes_and_gpus(job.resources)
        minutes = runtime_minutes(job.resources)
        local = job.shell in ("", "None")
        est = None if local else train_estimate(job, config)
        gpus = nodes * per_node
        row = dict(rule=job.rule, wildcards=job.wildcards,
                   partition="local" if local else job.resources.get("slurm_partition", "-"),
                   nodes=nodes, gpus_per_node=per_node, runtime_min=0 if local else minutes, estimate=est,
                   shell=job.shell)
        if est is not None:
            row["wall_hours"] = est.gpu_hours / gpus if gpus else None
            totals["train_gpu_hours"] += est.gpu_hours
        if not local:
            totals["gpu_alloc_hours"] += gpus * minutes / 60.0
        totals["jobs"] += 1
        rows.append(row)
    return rows, totals


def _by_rule(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["rule"], []).append(row)
    return groups


def render_markdown(rows: Sequence[dict[str, Any]], totals: dict[str, float], config: dict[str, Any]) -> str:
    plan = config["plan"]
    lines = [
        "| rule | wildcards | partition | nodes x GPUs | walltime | recipe | params | samples | tokens | GPU-h | "
        "est. wall h | walltime pieces |",
        "|---|---|---|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        est: TrainEstimate | None = r["estimate"]
        cells = [r["rule"], r["wildcards"] or "-", r["partition"], f"{r['nodes']} x {r['gpus_per_node']}",
                 _hours(r["runtime_min"])]
        if est is None:
            cells += ["-"] * 7
        else:
            wall = r.get("wall_hours")
            pieces = math.ceil(wall * 60 / r["runtime_min"]) if wall and r["runtime_min"] else "-"
            cells += [est.recipe, f"{_count(est.params)} ({est.shape_from})",
                      f"{est.samples:,.1f} ({est.samples_from})", f"{est.tokens:.3e}", f"{est.gpu_hours:,.1f}",
                      f"{wall:,.2f}" if wall else "-", str(pieces)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| rule | jobs | partition | nodes x GPUs | walltime | GPU-h |", "|---|---:|---|---|---|---:|"]
    for rule, group in _by_rule(rows).items():
        r = group[0]
        hours = [g["estimate"].gpu_hours for g in group if g["estimate"] is not None]
        lines.append(f"| {rule} | {len(group)} | {r['partition']} | {r['nodes']} x {r['gpus_per_node']} | "
                     f"{_hours(r['runtime_min'])} | {f'{sum(hours):,.1f}' if hours else '-'} |")
    lines += [
        "",
        f"DAG total: {int(totals['jobs'])} jobs; training {totals['train_gpu_hours']:,.1f} GPU-h estimated "
        f"(6 x params x tokens at MFU {plan['mfu']} of {plan['peak_tflops']} TFLOP/s per GPU, samples: {plan['tokens']}); "
        f"at most {totals['gpu_alloc_hours']:,.1f} GPU-h allocated if every GPU job ran to its walltime once.",
        "",
        *projection_lines(),
    ]
    return "\n".join(lines) + "\n"


def make_plan(workdir: Path, configfiles: Sequence[str], profile: str, targets: Sequence[str] = (),
              forceall: bool = False, dry_run_text: str | None = None) -> tuple[str, list[dict[str, Any]], dict]:
    config = load_config(workdir, configfiles)
    text = dry_run_text if dry_run_text is not None else dry_run(workdir, configfiles, profile, targets, forceall)
    rows, totals = plan_rows(parse_dry_run(text), copy.deepcopy(config))
    return render_markdown(rows, totals, config), rows, totals


def main(argv: Sequence[str] | None = None) -> int:
    def body(args_in: Sequence[str] | None) -> int:
        ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        ap.add_argument("--configfile", nargs="+", default=[], help="as snakemake --configfile (after config.yaml)")
        ap.add_argument("--profile", default="", help="e.g. profiles/slurm (default: the workflow's own profile)")
        ap.add_argument("--forceall", action="store_true", help="plan every job, even those already done")
        ap.add_argument("--dry-run-output", default="", help="read a saved `snakemake -n -p` output instead")
        ap.add_argument("--workdir", default=".", help="the workflow folder (Snakefile, config.yaml)")
        ap.add_argument("--out", default="", help="also write the Markdown table here")
        ap.add_argument("targets", nargs="*", help="snakemake targets, before --configfile (default: rule all)")
        args = ap.parse_args(args_in)
        text = Path(args.dry_run_output).read_text() if args.dry_run_output else None
        table, _, _ = make_plan(Path(args.workdir), args.configfile, args.profile, args.targets, args.forceall, text)
        if args.out:
            with atomic_open(args.out, "w") as fh:
                fh.write(table)
        sys.stdout.write(table)
        return 0

    return run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
