"""Training jobs through a real Slurm: a job killed with `scancel` mid-run, and a job that reaches its walltime, both
resume from their newest checkpoint and end with the per-step losses and final metrics of an uninterrupted run.

One small pretraining config (a tiny Llama on the small demo C4) serves all three runs; its data is prepared once,
locally, and copied into each run's folder, so the Slurm runs only train. The two Slurm runs and the local
uninterrupted run go side by side. Facts about Slurm's walltime signal: ../shared/notes/slurm-for-tests.md and
rules/train_common.smk.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import SNAKEMAKE, copy_workflow, run_snakemake
from seams import STEP_SLEEP_ENV, seam_env
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (slurm_cluster is a fixture)
from test_slurm_profile import PROFILE, _site_profile, _snakemake, _submissions
from workflow_scripts.train.train_checkpoint import newest_complete

RULE = "train_pretrain"
TARGET = "results/train/pretrain/seed1234/metrics.json"
RUN_DIR = "results/train/pretrain/seed1234"
TRAIN_LOG = "logs/train/pretrain_seed1234.log"
MAX_STEPS = 20  # an evaluation every 10 steps
CKPT_DIR = "checkpoints/pretrain/seed1234"
CONFIG = {
    "c4": {"train_shards": 4, "train_groups": 2, "validation_shards": 2, "validation_docs": 50},
    "demo": {"c4_docs_per_train_shard": 40, "c4_docs_per_validation_shard": 40, "tokenizer_vocab_size": 1000},
    "train": {"pretrain": {
        "blend": ["c4-train.en_0", "c4-train.en_1"], "weights": [50, 50],
        # target 0: never reached, every run trains exactly max_steps
        "overrides": {"max_steps": MAX_STEPS, "checkpoint_every_steps": 5, "global_batch_size": 4,
                      "micro_batch_size": 4, "seq_length": 64, "warmup_steps": 5, "eval_every_samples": 40,
                      "eval_samples": 8, "target": 0.0,
                      "model_shape": {"vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1,
                                      "num_attention_heads": 2, "num_query_groups": 1, "head_dim": 16,
                                      "max_position_embeddings": 64}},
    }},
}
# Walltime: slurmctld looks at time limits every 30 s and sends --signal once less than <offset> + 30 s are left
# (measured on Slurm 22.05), so with 3 minutes and USR1@60 the signal comes 90-120 s after the job starts, a minute
# before the time limit. The first attempt sleeps SLOW_STEP_S after each step (the step-sleep test seam, off
# once resumed), so it cannot finish before its signal.
WALLTIME_MIN = 3
SIGNAL = "--signal=USR1@60"
SLOW_STEP_S = 10.0
# The resubmitted job gets a longer walltime (the runtime is an expression of `attempt`): on this busy 2-core test
# machine a trainer took 64 s to start, too close to the 90 s after which a 3-minute job may get its signal. (A real
# site keeps one walltime: every attempt trains a walltime-sized piece.) The scancel run never sees a signal.
RETRY_RUNTIME_MIN = 30
SIGNAL_LINE = re.compile(r"signal 10: checkpoint saved at step (\d+), exiting 75")
# scancel: the first attempt sleeps a little per step, so that it is still running after its first checkpoint.
KILL_SLOW_STEP_S = 0.5
STEP_FIELDS = ["step", "consumed_samples", "loss", "lr", "grad_norm"]  # tokens_per_s and step_time_s are timings
METRIC_FIELDS = ["workload", "recipe", "seed", "status", "steps", "samples", "final_quality", "evals", "target"]


def _resume_line(step: int) -> str:
    return f"resumed from {CKPT_DIR}/step_{step:08d} (step {step})"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The data up to the index cache, built locally once; each run copies it (results and Snakemake's records)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("resume_data"))
    (workdir / "resume.yaml").write_text(yaml.safe_dump(CONFIG))
    run_snakemake(workdir, "--cores", "2", "results/train/pretrain/index_cache.json", "--configfile", "resume.yaml")
    return workdir


def _clone(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest, symlinks=True)  # copy2 keeps modification times: nothing upstream is redone
    return dest


def _train_site_profile(repo: Path, cluster: SlurmCluster, dest: Path, runtime: int | str) -> Path:
    """The test site profile, with the pretraining job shrunk to this node (one fake GPU), the given runtime (minutes,
    or an expression of `attempt`) and an early walltime signal."""
    site = _site_profile(repo, cluster, dest)
    profile = yaml.safe_load((site / "config.yaml").read_text())
    train = profile["set-resources"][RULE]
    train.update(gres=f"gpu:{cluster.gpu_type}:1", cpus_per_gpu=2, mem_mb=4000, runtime=runtime, slurm_extra=SIGNAL)
    (site / "config.yaml").write_text(yaml.safe_dump(profile))
    return site


def _slurm_args(site: Path) -> list[str]:
    return [TARGET, "--profile", PROFILE, "--profile", str(site), "--configfile", "resume.yaml"]


class LogWatcher(threading.Thread):
    """Keeps the trainer log of the first attempt that hit the walltime signal: the resubmitted job overwrites it."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.signalled, self.done = path, "", threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and not self.signalled:
            text = self.path.read_text(errors="replace") if self.path.is_file() else ""
            if SIGNAL_LINE.search(text):
                self.signalled = text
            time.sleep(0.2)


@dataclass
class KillRuns:
    killed: subprocess.CompletedProcess
    killed_log: str
    newest_step: int
    rerun: subprocess.CompletedProcess
    workdir: Path


@dataclass
class WalltimeRun:
    proc: subprocess.CompletedProcess
    first_log: str
    workdir: Path


@dataclass
class ResumeRuns:
    cluster: SlurmCluster
    local: Path
    kill: KillRuns
    walltime: WalltimeRun


def _wait_for_checkpoint(workdir: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while newest_complete(workdir / CKPT_DIR) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no checkpoint appeared in {workdir / CKPT_DIR}")
        time.sleep(0.2)


def _job_of_rule(cluster: SlurmCluster, workdir: Path) -> str:
    """The running Slurm job of RULE (its Slurm log folder is named after the rule)."""
    folder = workdir / f".snakemake/slurm_logs/rule_{RULE}"
    [log] = list(folder.rglob("*.log"))
    return log.stem


def _kill_mid_run(prepared: Path, site: Path, cluster: SlurmCluster, dest: Path) -> KillRuns:
    """Attempt 1 is cancelled once it saved a checkpoint; no retry. Then the rerun. Slurm 22.05 treats
    `scancel --signal=KILL` as a cancel: SIGTERM to every process of the job step, SIGKILL after KillWait (30 s).
    The trainer saves where it is on that SIGTERM (before train_checkpoint.spawn_writer_helper_ignoring that save
    failed: megatron's checkpoint-writer helper died of the same SIGTERM; the rerun then resumed from step 5)."""
    workdir = _clone(prepared, dest)
    args = [*_slurm_args(site), "--retries", "0"]
    env = seam_env(cluster.env, workdir, **{STEP_SLEEP_ENV: str(KILL_SLOW_STEP_S)})
    with open(workdir / "killed.err", "w") as err:
        proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            _wait_for_checkpoint(workdir, proc)
            cluster.run("scancel", "--signal=KILL", _job_of_rule(cluster, workdir))
            out, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    killed = subprocess.CompletedProcess(proc.args, proc.returncode, out, (workdir / "killed.err").read_text())
    killed_log = (workdir / TRAIN_LOG).read_text(errors="replace")
    newest = newest_complete(workdir / CKPT_DIR)
    rerun = _snakemake(workdir, *args, "--rerun-incomplete", env=cluster.env)
    return KillRuns(killed, killed_log, int(newest.name.split("_")[1]), rerun, workdir)


@pytest.fixture(scope="module")
def resume_runs(prepared, slurm_cluster, repo, tmp_path_factory):  # noqa: F811
    base = tmp_path_factory.mktemp("slurm_resume")
    walltime_site = _train_site_profile(repo, slurm_cluster, base / "walltime_profile",
                                        f"{WALLTIME_MIN} if attempt == 1 else {RETRY_RUNTIME_MIN}")
    kill_site = _train_site_profile(repo, slurm_cluster, base / "kill_profile", RETRY_RUNTIME_MIN)
    local = _clone(prepared, base / "local")
    with open(local / "local.err", "w") as local_err:
        local_proc = subprocess.Popen([SNAKEMAKE, TARGET, "--cores", "2", "--configfile", "resume.yaml"], cwd=local,
                                      env=dict(os.environ, PYTHONPATH=str(local)), stdout=subprocess.DEVNULL,
                                      stderr=local_err)
    walltime_dir = _clone(prepared, base / "walltime")
    watcher = LogWatcher(walltime_dir / TRAIN_LOG)
    watcher.start()
    walltime_proc = subprocess.Popen(
        [SNAKEMAKE, *_slurm_args(walltime_site)], cwd=walltime_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        env=seam_env(slurm_cluster.env, walltime_dir, **{STEP_SLEEP_ENV: str(SLOW_STEP_S)}))
    try:
        kill = _kill_mid_run(prepared, kill_site, slurm_cluster, base / "kill")
        out, err = walltime_proc.communicate(timeout=900)
        assert local_proc.wait(timeout=600) == 0, (local / "local.err").read_text()[-5000:]
    finally:
        watcher.done.set()
        for proc in (local_proc, walltime_proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    walltime = WalltimeRun(subprocess.CompletedProcess(walltime_proc.args, walltime_proc.returncode, out, err),
                           watcher.signalled, walltime_dir)
    return ResumeRuns(slurm_cluster, local, kill, walltime)


def _steps(workdir: Path) -> list[dict[str, str]]:
    return [{k: row[k] for k in STEP_FIELDS} for row in csv.DictReader(open(workdir / RUN_DIR / "steps.csv"))]


def _metrics(workdir: Path) -> dict:
    metrics = json.loads((workdir / RUN_DIR / "metrics.json").read_text())
    return {k: metrics[k] for k in METRIC_FIELDS}


def _assert_same_training(workdir: Path, local: Path) -> None:
    steps = _steps(workdir)
    assert [int(row["step"]) for row in steps] == list(range(1, MAX_STEPS + 1))
    assert steps == _steps(local)
    assert (workdir / RUN_DIR / "eval.csv").read_text() == (local / RUN_DIR / "eval.csv").read_text()
    assert _metrics(workdir) == _metrics(local)
    assert len(_metrics(local)["evals"]) == MAX_STEPS // 10


@pytest.mark.slow
def test_scancel_killed_training_job_resumes_on_rerun_and_equals_an_uninterrupted_run(resume_runs):
    kill, cluster = resume_runs.kill, resume_runs.cluster
    assert kill.killed.returncode != 0
    [(_, killed_job, _)] = [s for s in _submissions(kill.killed.stderr) if s[0] == RULE]
    assert cluster.job_field(killed_job, "JobState") in ("FAILED", "CANCELLED")
    # Cancelled mid-run, after its first periodic checkpoint: it saved where it was on the SIGTERM and exited 75.
    assert f"checkpoint saved at step 5 -> {CKPT_DIR}" in kill.killed_log
    saved = re.search(r"signal 15: checkpoint saved at step (\d+), exiting 75", kill.killed_log)
    assert saved and int(saved.group(1)) == kill.newest_step
    assert "resumed from" not in kill.killed_log and f"step {MAX_STEPS} loss" not in kill.killed_log
    assert kill.rerun.returncode == 0, kill.rerun.stderr[-5000:]
    [(_, rerun_job, _)] = [s for s in _submissions(kill.rerun.stderr) if s[0] == RULE]
    assert cluster.job_field(rerun_job, "JobState") == "COMPLETED"
    rerun_log = (kill.workdir / TRAIN_LOG).read_text()
    assert _resume_line(kill.newest_step) in rerun_log
    assert f"step {kill.newest_step + 1} loss" in rerun_log and f"step {kill.newest_step} loss" not in rerun_log
    _assert_same_training(kill.workdir, resume_runs.local)


@pytest.mark.slow
def test_training_job_at_its_walltime_is_signalled_resubmitted_resumed_and_completed(resume_runs):
    run, cluster = resume_runs.walltime, resume_runs.cluster
    assert run.proc.returncode == 0, run.proc.stderr[-5000:]
    jobs = [job for rule, job, _ in _submissions(run.proc.stderr) if rule == RULE]
    assert len(jobs) == 2, "the profile's retry resubmits the signalled job once"
    first, second = jobs
    # The first job ended by itself after the signal (its trainer saved and exited 75), before the time limit.
    assert cluster.job_field(first, "JobState") == "FAILED"
    assert cluster.job_field(first, "TimeLimit") == f"00:{WALLTIME_MIN:02d}:00"
    assert cluster.job_field(first, "RunTime") < f"00:{WALLTIME_MIN:02d}:00"
    signalled = SIGNAL_LINE.search(run.first_log)
    assert signalled, "the first attempt's trainer log never showed the walltime signal"
    step = int(signalled.group(1))
    assert 0 < step < MAX_STEPS
    assert cluster.job_field(second, "JobState") == "COMPLETED"
    assert cluster.job_field(second, "TimeLimit") == f"00:{RETRY_RUNTIME_MIN:02d}:00"
    final_log = (run.workdir / TRAIN_LOG).read_text()
    assert _resume_line(step) in final_log
    _assert_same_training(run.workdir, resume_runs.local)


@pytest.mark.slow
def test_demo_sized_training_job_through_the_site_edited_profile_asks_for_cpu_sized_resources(
        prepared, slurm_cluster, repo, tmp_path):  # noqa: F811
    """profiles/slurm with only its SITE EDIT lines changed (the partition names): the demo-sized pretraining job
    asks for what its config needs (no GPU, the CPU-sized memory the workflow derives), not a GPU node's 8 GPUs and
    960 GB, and runs to completion."""
    from workflow_scripts.dag.train_jobs import CPU_JOB_MEM_MB

    workdir = _clone(prepared, tmp_path / "sized")
    site = _site_profile(repo, slurm_cluster, tmp_path / "site")
    proc = _snakemake(workdir, *_slurm_args(site), env=slurm_cluster.env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    [(_, job, _)] = [s for s in _submissions(proc.stderr) if s[0] == RULE]
    assert slurm_cluster.job_field(job, "MinMemoryNode") == f"{CPU_JOB_MEM_MB}M"
    assert slurm_cluster.job_field(job, "Partition") == slurm_cluster.gpu_partition
    assert "gpu:" not in slurm_cluster.job_field(job, "TRES")  # allocated: CPUs and memory only
    assert _metrics(workdir)["steps"] == MAX_STEPS


def test_checkpoint_writer_helper_survives_the_signals_slurm_sends_to_the_whole_step(repo):
    """The helper that megatron's dist_checkpointing.save spawns once and keeps (train_checkpoint) ignores SIGUSR1 and
    SIGTERM, and the trainer's own handler stays in place."""
    code = """
import multiprocessing as mp, os, signal, time
from megatron.core.dist_checkpointing.strategies import filesystem_async
from workflow_scripts.train import train_checkpoint
mine = lambda *_: None
signal.signal(signal.SIGUSR1, mine)
train_checkpoint.spawn_writer_helper_ignoring((signal.SIGTERM, signal.SIGUSR1))
assert signal.getsignal(signal.SIGUSR1) is mine
[helper] = mp.active_children()
os.kill(helper.pid, signal.SIGUSR1)
os.kill(helper.pid, signal.SIGTERM)
time.sleep(1)
queue = filesystem_async._get_write_results_queue()
queue.put("delivered")
print(helper.is_alive(), queue.get())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "delivered"]
