"""profiles/slurm: its settings, planning with it where there is no Slurm, and runs through a real Slurm.

The Slurm runs use the C4 and OpenOrca parts of the demo at a small size, plus the test-only GPU probe rule (added to
the test's copies of the workflow from tests/helpers/seams/gpu_probe.smk), and a site profile layered after
profiles/slurm that only renames the partitions (and polls faster), as a site would.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import NOT_DATA, SNAKEMAKE, copy_workflow, run_snakemake
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (slurm_cluster is a fixture)
from seams import FAIL_MODULE_ENV, SEAMS_DIR, seam_env

PROFILE = "profiles/slurm"
TARGETS = ["c4_data", "results/openorca/stats.json", "results/testing/gpu_probe.json"]
SMALL = {
    "c4": {"train_shards": 4, "train_groups": 2, "validation_shards": 2, "validation_docs": 50},
    "demo": {"c4_docs_per_train_shard": 40, "c4_docs_per_validation_shard": 40, "tokenizer_vocab_size": 1000,
             "openorca_rows_per_origin": 30},
    "openorca": {"total_samples": 40, "calibration_size": 8},
}
FAILING_RULE = "openorca_filter"  # mid-DAG: after demo_tokenizer and demo_openorca_parquet, before openorca_sample
GPU_RULE = "slurm_gpu_probe"
# The profile's retries, lowered so the injected failure costs two submissions, not three.
TEST_RETRIES = 1
SUBMITTED = re.compile(r"^Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.$", re.M)


def _profile(repo: Path) -> dict:
    return yaml.safe_load((repo / PROFILE / "config.yaml").read_text())


def _snakemake(workdir: Path, *args: str, env: dict[str, str], timeout: int = 900,
               seams: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`seams`: test seam variables, set with the seams folder on PYTHONPATH."""
    env = seam_env(env, workdir, **seams) if seams else dict(env, PYTHONPATH=str(workdir))
    return subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def _with_gpu_probe(workdir: Path) -> Path:
    """The copy `workdir` with the test-only rule GPU_RULE (results/testing/gpu_probe.json) added."""
    probe_rules = (SEAMS_DIR / "gpu_probe.smk").relative_to(SEAMS_DIR.parents[2]).as_posix()
    with open(workdir / "Snakefile", "a") as snakefile:
        snakefile.write(f'\ninclude: "{probe_rules}"\n')
    return workdir


def _write_small_config(workdir: Path) -> str:
    (workdir / "small.yaml").write_text(yaml.safe_dump(SMALL))
    return "small.yaml"


# --- the profile file itself -------------------------------------------------------------------------------------

def test_every_profile_entry_is_commented_and_partitions_are_site_edits(repo):
    lines = (repo / PROFILE / "config.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^\s*[\w-]+:", line):
            continue
        indent = len(line) - len(line.lstrip())
        j = i - 1
        while j >= 0 and re.match(r"^\s*[\w-]+:", lines[j]) and len(lines[j]) - len(lines[j].lstrip()) == indent:
            j -= 1
        assert j >= 0 and lines[j].strip().startswith("#"), f"{PROFILE}/config.yaml entry without a comment: {line}"
        if line.strip().startswith("slurm_partition:"):
            assert "SITE EDIT" in lines[i - 1], f"partition line {i + 1} is not marked SITE EDIT"
    profile = _profile(repo)
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    gpu_rules = profile["set-resources"]
    assert set(gpu_rules) == {"train_lora", "train_pretrain", "train_sft", "generate", "verify_conversion"}
    for rule, res in gpu_rules.items():
        # Site facts only: what a job asks for (GPUs, memory, walltime, nodes) the workflow derives from its config;
        # the GPU type is the GPU partition's (a gpu_model would turn a CPU-sized job into --gpus=<type>:0).
        assert res["slurm_partition"] == "h100" and "gpu_model" not in res, rule
        assert set(res) <= {"slurm_partition", "cpus_per_gpu", "slurm_extra"}, rule
    # The GPU partition is written once (a YAML anchor carries it to every GPU rule), as is the CPU partition.
    text = (repo / PROFILE / "config.yaml").read_text()
    assert re.findall(r"^\s*slurm_partition: (.*)$", text, flags=re.M) == ['"cpu"', '"h100"']
    assert not re.findall(r"^\s*(gpu_model|gres|gpu|mem_mb|runtime|nodes):", text.split("set-resources:")[1], flags=re.M)


def test_profile_settings_survive_the_default_workflow_profile(repo, monkeypatch):
    """profiles/default is loaded as workflow profile next to --profile and wins key by key: it must not undo the
    Slurm profile's settings (keep-going above all: without it a failure stops independent jobs)."""
    from snakemake.cli import parse_args

    monkeypatch.chdir(repo)
    _, args = parse_args(["--profile", PROFILE, "-n"])
    profile = _profile(repo)
    assert args.executor == "slurm"
    assert args.keep_going is profile["keep-going"] is True, "profiles/default overrides keep-going of profiles/slurm"
    assert args.retries == profile["retries"] and args.jobs == profile["jobs"]
    assert args.slurm_status_command == "squeue"


# --- planning without Slurm --------------------------------------------------------------------------------------

def _no_slurm_env() -> dict[str, str]:
    """No cluster to reach (the test cluster's SLURM_CONF is not passed on); a dry run must not need one.
    (Not SLURM_CONF=/nonexistent: the plugin's `scontrol show config` then waits for its 10 s timeout, twice.)"""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def _job_resources(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job a dry run lists."""
    return re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", dry_run_output, flags=re.M)


@pytest.fixture(scope="module")
def plan_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("slurm_plan"))


def test_dry_run_of_405b_c4_config_with_slurm_profile_plans_without_data(plan_copy, tmp_path):
    raw = tmp_path / "c4"
    raw.mkdir()
    for i in range(1024):
        (raw / f"c4-train.{i:05d}-of-01024.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    for i in range(8):
        (raw / f"c4-validation.{i:05d}-of-00008.json.gz").write_bytes(NOT_DATA)  # not gzip: any read of it fails
    (tmp_path / "tokenizer.json").write_bytes(NOT_DATA)
    paths = tmp_path / "paths.yaml"
    paths.write_text(yaml.safe_dump({"c4": {"raw_dir": str(raw), "tokenizer": str(tmp_path / "tokenizer.json")}}))
    proc = _snakemake(plan_copy, "-n", "c4_data", "--profile", PROFILE, "--configfile",
                      "configs/llama31_405b_c4.yaml", str(paths), env=_no_slurm_env(), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(c4_\w+)\s+(\d+)$", out, flags=re.M))
    assert counts == {"c4_consolidate_train": "8", "c4_consolidate_validation": "1", "c4_tokenize": "9", "c4_data": "1"}
    jobs = _job_resources(out)
    assert len(jobs) == 19
    assert all("slurm_partition=cpu" in res for rule, res in jobs if rule != "c4_data"), jobs


def test_dry_run_of_demo_puts_gpu_rules_on_h100_and_the_rest_on_cpu(plan_copy, repo):
    """Also: set-resources naming rules the workflow does not have (yet) is no error."""
    proc = _snakemake(plan_copy, "-n", "--profile", PROFILE, env=_no_slurm_env(), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = _job_resources(out)
    assert {rule for rule, _ in jobs} >= {"verify_conversion", "c4_tokenize", "openorca_filter"}
    gpu_rules = _profile(repo)["set-resources"]
    for rule, res in jobs:
        if rule in gpu_rules:
            expected = {key: str(value) for key, value in gpu_rules[rule].items() if key != "slurm_extra"}
            shown = dict(item.split("=", 1) for item in res.split(", "))
            assert {key: shown.get(key) for key in expected} == expected, (rule, res)
            # The demo's CPU model: CPU-sized requests, no GPU (--gpus=h100:0), a few GB, as a small cluster holds.
            assert shown["gpu"] == "0" and int(shown["mem_mb"]) <= 8000, (rule, res)
        elif rule != "all":
            assert "slurm_partition=cpu" in res and "gpu" not in res, (rule, res)


def test_dry_run_of_70b_lora_config_derives_gpus_memory_and_conversion_layout(plan_copy, tmp_path):
    """The 70B LoRA recipe (TP 4, TE spec) on nproc_per_node 8: 8 GPUs and 960 GB for training and generation, one
    GPU for the parity check, and the conversion at TP 4 with the TE spec, none of it written in the profile."""
    (tmp_path / "hf").mkdir()
    paths = tmp_path / "paths.yaml"
    paths.write_text(yaml.safe_dump({"convert": {"hf_checkpoint": str(tmp_path / "hf")}}))
    proc = _snakemake(plan_copy, "-n", "-p", "--profile", PROFILE, "--configfile", "configs/llama2_70b_lora_8xh100.yaml",
                      str(paths), env=_no_slurm_env(), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    shown = {rule: dict(item.split("=", 1) for item in res.split(", ")) for rule, res in _job_resources(out)}
    assert {k: shown["train_lora"][k] for k in ("gpu", "mem_mb", "nodes", "slurm_partition")} == \
        {"gpu": "8", "mem_mb": "960000", "nodes": "1", "slurm_partition": "h100"}
    assert shown["generate"]["gpu"] == "8" and shown["verify_conversion"]["gpu"] == "1"
    assert "--tp 4 --pp 1 --spec te" in out


# --- runs through a real Slurm -----------------------------------------------------------------------------------

def _site_profile(repo: Path, cluster: SlurmCluster, dest: Path) -> Path:
    """A site's profile layered after profiles/slurm: the same resources with its own partition names. For the test
    also fast polling (MinJobAge 600 >= 3 x 1 s keeps squeue as status command) and fewer retries."""
    profile = _profile(repo)
    names = {"cpu": cluster.cpu_partition, "h100": cluster.gpu_partition}
    default = dict(profile["default-resources"], slurm_partition=names[profile["default-resources"]["slurm_partition"]])
    per_rule = {rule: dict(res, slurm_partition=names[res["slurm_partition"]])
                for rule, res in profile["set-resources"].items()}
    per_rule[GPU_RULE] = dict(per_rule["verify_conversion"])  # the probe asks for what a GPU rule asks for
    dest.mkdir()
    (dest / "config.yaml").write_text(yaml.safe_dump({
        "default-resources": default,
        "set-resources": per_rule,
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 1,
        "max-status-checks-per-second": 10,
        "latency-wait": 5,
        "retries": TEST_RETRIES,
    }))
    return dest


def _submissions(stderr: str) -> list[tuple[str, str, Path]]:
    """(rule, Slurm job id, Slurm log) of every sbatch submission a snakemake run reports."""
    found = []
    for job_id, log in SUBMITTED.findall(stderr):
        rule = re.search(r"/rule_(\w+)/", log).group(1)
        found.append((rule, job_id, Path(log)))
    return found


@dataclass
class SlurmRuns:
    workdir: Path
    cluster: SlurmCluster
    failed: subprocess.CompletedProcess
    rerun: subprocess.CompletedProcess
    planned: dict[str, int]


@pytest.fixture(scope="module")
def local_run_started(tmp_path_factory):
    """The same targets and config run locally (profiles/default), started in the background: it overlaps the Slurm
    runs, which mostly wait for job starts and status polls."""
    workdir = _with_gpu_probe(copy_workflow(tmp_path_factory.mktemp("local_run")))
    args = [SNAKEMAKE, *TARGETS, "--cores", "2", "--configfile", _write_small_config(workdir)]
    with open(workdir / "local_run.log", "w") as log:
        proc = subprocess.Popen(args, cwd=workdir, env=dict(os.environ, PYTHONPATH=str(workdir)), stdout=log,
                                stderr=subprocess.STDOUT)
    yield workdir, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def local_run(local_run_started):
    workdir, proc = local_run_started
    assert proc.wait(timeout=900) == 0, (workdir / "local_run.log").read_text()[-5000:]
    return workdir


@pytest.fixture(scope="module")
def slurm_runs(local_run_started, slurm_cluster, repo, tmp_path_factory):  # noqa: F811
    """The targets through Slurm with FAILING_RULE failing, then `--rerun-incomplete` without the fault."""
    workdir = _with_gpu_probe(copy_workflow(tmp_path_factory.mktemp("slurm_run")))
    config = _write_small_config(workdir)
    site = _site_profile(repo, slurm_cluster, workdir / "site_profile")
    # --keep-going repeats the profile's setting, which profiles/default overrides (see the test above).
    common = [*TARGETS, "--profile", PROFILE, "--profile", str(site), "--keep-going", "--configfile", config]
    plan = _snakemake(workdir, "-n", *common, env=slurm_cluster.env)
    planned = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", plan.stdout + plan.stderr, flags=re.M)
               if rule not in ("total", "count")}
    failed = _snakemake(workdir, *common, env=slurm_cluster.env, seams={FAIL_MODULE_ENV: FAILING_RULE})
    rerun = _snakemake(workdir, *common, "--rerun-incomplete", env=slurm_cluster.env)
    return SlurmRuns(workdir, slurm_cluster, failed, rerun, planned)


@pytest.mark.slow
def test_every_non_local_job_was_an_sbatch_job_with_its_slurm_log(slurm_runs):
    runs = slurm_runs
    assert runs.rerun.returncode == 0, runs.rerun.stderr[-5000:]
    submitted = _submissions(runs.failed.stderr) + _submissions(runs.rerun.stderr)
    completed = {}
    for rule, job_id, log in submitted:
        assert log.name == f"{job_id}.log" and log.is_file(), log
        assert f"rule {rule}:" in log.read_text()
        expected = runs.cluster.gpu_partition if rule == GPU_RULE else runs.cluster.cpu_partition
        assert runs.cluster.job_field(job_id, "Partition") == expected, (rule, job_id)
        if runs.cluster.job_field(job_id, "JobState") == "COMPLETED":
            completed[rule] = completed.get(rule, 0) + 1
    # Every planned job except the target-only rule c4_data (run by snakemake itself) completed as one Slurm job.
    local = {"c4_data"}
    assert completed == {rule: n for rule, n in runs.planned.items() if rule not in local}, (completed, runs.planned)


@pytest.mark.slow
def test_gpu_rule_job_gets_a_gpu_and_sees_cuda_visible_devices(slurm_runs, repo):
    probe = yaml.safe_load((slurm_runs.workdir / "results/testing/gpu_probe.json").read_text())
    [(_, job_id, _)] = [s for s in _submissions(slurm_runs.failed.stderr) if s[0] == GPU_RULE]
    assert probe == {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": job_id,
                     "SLURM_JOB_PARTITION": slurm_runs.cluster.gpu_partition}
    assert slurm_runs.cluster.job_field(job_id, "JOB_GRES") == f"gpu:{slurm_runs.cluster.gpu_type}:1"
    cpus_per_gpu = _profile(repo)["set-resources"]["verify_conversion"]["cpus_per_gpu"]
    assert slurm_runs.cluster.job_field(job_id, "CpusPerTres") == f"gres:gpu:{cpus_per_gpu}"
    cpu_job = next(job for rule, job, _ in _submissions(slurm_runs.failed.stderr) if rule == "c4_tokenize")
    assert slurm_runs.cluster.job_field(cpu_job, "JOB_GRES") == "(null)"


@pytest.mark.slow
def test_slurm_results_equal_a_local_run_byte_for_byte(slurm_runs, local_run):
    def files(root: Path) -> dict[str, bytes]:
        out = {}
        for path in sorted((root / "results").rglob("*")):
            rel = path.relative_to(root).as_posix()
            # the probe records its environment; rule benchmarks record wall times
            if path.is_file() and not rel.startswith(("results/testing/", "results/benchmarks/")):
                out[rel] = path.read_bytes()
        return out

    slurm, local = files(slurm_runs.workdir), files(local_run)
    assert sorted(slurm) == sorted(local)
    assert len(slurm) >= 15
    differing = [name for name in slurm if slurm[name] != local[name]]
    assert not differing


@pytest.mark.slow
def test_injected_failure_then_rerun_incomplete_runs_exactly_the_failed_job_and_its_dependents(slurm_runs):
    failed = slurm_runs.failed
    assert failed.returncode != 0
    assert f"failure injected by {FAIL_MODULE_ENV}={FAILING_RULE}" in failed.stderr  # show-failed-logs
    first = _submissions(failed.stderr)
    attempts = [job for rule, job, _ in first if rule == FAILING_RULE]
    assert len(attempts) == TEST_RETRIES + 1, "each retry is a new sbatch job"
    assert all(slurm_runs.cluster.job_field(job, "JobState") == "FAILED" for job in attempts)
    # keep-going: everything that does not depend on the failed job ran; its dependent did not.
    assert {rule for rule, _, _ in first} == set(slurm_runs.planned) - {"c4_data", "openorca_sample"}
    rerun = sorted(rule for rule, _, _ in _submissions(slurm_runs.rerun.stderr))
    assert rerun == ["openorca_filter", "openorca_sample"]


def _plan(workdir: Path, *args: str) -> str:
    proc = run_snakemake(workdir, "-n", *TARGETS, *args)
    return proc.stdout + proc.stderr


def _summary(workdir: Path, *args: str) -> list[dict[str, str]]:
    lines = run_snakemake(workdir, "--summary", *TARGETS, *args).stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("output_file\t")))
    names = lines[header].split("\t")
    return [dict(zip(names, line.split("\t"))) for line in lines[header + 1:] if line.strip()]


@pytest.mark.slow
def test_params_change_upstream_shows_exactly_the_stale_outputs(local_run):
    """`--summary` (not `--list-changes params`: in snakemake 9.27.1 it lists every output with recorded params)."""
    (local_run / "changed.yaml").write_text(yaml.safe_dump({"openorca": {"seqlen_limit": 900}}))
    configs = ["--configfile", "small.yaml", "changed.yaml"]
    rows = _summary(local_run, *configs)
    filter_outputs = ["results/openorca/filter_stats.json", "results/openorca/open_orca_gpt4_tokenized_llama.full.parquet"]
    assert sorted(r["output_file"] for r in rows if r["status"] == "params changed") == filter_outputs
    pending = {r["rule"] for r in rows if r["plan"] == "update pending"}
    assert pending == {"openorca_filter", "openorca_sample"}
    assert all(r["status"] == "ok" for r in rows if r["rule"] not in pending)
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", _plan(local_run, *configs), flags=re.M))
    assert planned == {"openorca_filter": "1", "openorca_sample": "1", "total": "2"}
    # Provenance off: modification times alone find nothing to do; and without the change nothing is stale.
    assert "Nothing to be done" in _plan(local_run, *configs, "--rerun-triggers", "mtime")
    assert "Nothing to be done" in _plan(local_run, "--configfile", "small.yaml")
