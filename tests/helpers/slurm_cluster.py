"""A real single-host Slurm for the profile tests: Debian's slurmctld/slurmd/munge, installed when missing.

Everything (config, state, logs, munge socket and key, ports) lives in one scratch folder, so a second test session on
the same host gets its own cluster; the daemons are stopped by PID. The node pretends to be one H100 node
(`SlurmdParameters=config_overrides`: configured CPUs/memory are trusted, nothing drains) with two fake GPUs as GRES
of type h100: character devices, so Slurm sets CUDA_VISIBLE_DEVICES. Facts: ../shared/notes/slurm-for-tests.md.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged"]
CPU_PARTITION = "ci_cpu"
GPU_PARTITION = "ci_h100"
GPU_TYPE = "h100"
# MinJobAge must stay >= 3 x slurm-init-seconds-before-status-checks, else the plugin falls back to sacct (hangs).
MIN_JOB_AGE = 600


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    cpu_partition: str = CPU_PARTITION
    gpu_partition: str = GPU_PARTITION
    gpu_type: str = GPU_TYPE
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm clients (and snakemake): this cluster's config, no inherited job variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '')}"
        return env

    def run(self, *args: str) -> str:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout

    def job_field(self, job_id: str, name: str) -> str:
        """One field of `scontrol show job` (finished jobs stay visible for MinJobAge seconds)."""
        for token in self.run("scontrol", "show", "job", "-d", job_id).split():
            key, _, value = token.partition("=")
            if key == name:
                return value
        raise KeyError(f"{name} not in scontrol show job {job_id}")


def install_reason() -> str | None:
    """Install the Debian packages when a binary is missing; the reason why not, or None when Slurm is usable."""
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "Slurm is not installed and cannot be (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env,
                       check=True, capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as err:
        output = getattr(err, "stderr", b"") or b""
        return f"installing {' '.join(PACKAGES)} with apt-get failed: {err} {output.decode(errors='replace')[-500:]}"
    return None


def _srun_shim(root: Path, conf: Path) -> None:
    """`srun` that finds this cluster: inside a job the jobstep plugin drops SLURM_* (SLURM_CONF too) from its nested
    srun's environment; real clusters keep slurm.conf where srun looks by default (/etc/slurm, or configless)."""
    shim = root / "bin/srun"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun") or "/usr/bin/srun"} "$@"\n')
    shim.chmod(0o755)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_gpus(root: Path, count: int) -> str:
    """Character devices (/dev/null's numbers) stand in for /dev/nvidiaN; Slurm refuses plain files."""
    dev = root / "dev"
    dev.mkdir()
    for i in range(count):
        subprocess.run(["mknod", "-m", "666", str(dev / f"nvidia{i}"), "c", "1", "3"], check=True)
    return f"{dev}/nvidia[0-{count - 1}]"


def write_config(root: Path, gpus: int = 2, cpus: int = 32, memory_mb: int = 1_000_000) -> Path:
    """slurm.conf + gres.conf for one node 'localhost' holding both partitions."""
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    devices = _fake_gpus(root, gpus)
    (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName=localhost Name=gpu Type={GPU_TYPE} File={devices}\n")
    conf = root / "slurm.conf"
    _srun_shim(root, conf)
    conf.write_text(
        f"""ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge={MIN_JOB_AGE}
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{GPU_TYPE}:{gpus} State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes=localhost MaxTime=INFINITE State=UP
"""
    )
    return conf


def _start_munge(root: Path) -> subprocess.Popen:
    munge = root / "munge"
    munge.mkdir()
    munge.chmod(0o755)  # munged wants its socket folder searchable by all
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    shutil.chown(munge, "munge", "munge")
    shutil.chown(key, "munge", "munge")
    args = [
        "setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "/usr/sbin/munged", "-F",
        f"--socket={munge}/munge.socket", f"--key-file={key}", f"--pid-file={munge}/munged.pid",
        f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed",
    ]
    return _daemon(args, root / "log/munged.out")


def _daemon(args: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(out, "wb") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(cluster: SlurmCluster, what: str, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p.args[0] for p in cluster.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited; see logs in {cluster.root}")
        try:
            if ready():
                return
        except subprocess.SubprocessError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"Slurm: {what} not reached in {timeout}s; logs in {cluster.root}/log")


def start(root: Path) -> SlurmCluster:
    conf = write_config(root)
    cluster = SlurmCluster(root=root, conf=conf)
    env = cluster.env
    try:
        cluster.processes.append(_start_munge(root))
        _wait_for(cluster, "munge socket", (root / "munge/munge.socket").exists)
        cluster.processes.append(_daemon(["/usr/sbin/slurmctld", "-D", "-i"], root / "log/slurmctld.out", env))
        cluster.processes.append(_daemon(["/usr/sbin/slurmd", "-D", "-N", "localhost"], root / "log/slurmd.out", env))
        _wait_for(cluster, "node idle", lambda: cluster.run("sinfo", "-h", "-N", "-o", "%t").split() == ["idle", "idle"])
    except BaseException:
        stop(cluster)
        raise
    return cluster


def stop(cluster: SlurmCluster) -> None:
    """Daemons in reverse start order, by PID: SIGTERM, then SIGKILL after 10 s."""
    for proc in reversed(cluster.processes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    cluster.processes.clear()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running cluster (partitions ci_cpu and ci_h100 on one node); skipped only when Slurm cannot be installed."""
    reason = install_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's 0700 tmp tree: munged runs as user munge and must reach its socket folder.
    root = Path(tempfile.mkdtemp(prefix="slurm-ci-", dir="/tmp"))
    root.chmod(0o755)
    cluster = start(root)
    try:
        yield cluster
    finally:
        stop(cluster)
        shutil.rmtree(root, ignore_errors=True)
