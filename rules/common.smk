# The one file of shared rule-side state: the DAG's layout (workflow_scripts/dag) built once from the validated
# config; rule files hold rules only and name its attributes. A config the DAG cannot hold stops here, key named.
import signal
from pathlib import Path

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.runtime import export_interpreter_path, export_package_path
from workflow_scripts.dag import layout as paths
from workflow_scripts.dag.layout import Layout
from workflow_scripts.dag.train_jobs import (conversion, data_length_mismatches, demo_base_overrides, generate_resources,
                                             index_cache_overrides, train_jobs, verify_resources)


export_package_path(workflow.basedir)
export_interpreter_path()

# Walltime signal (profiles/slurm: --signal=USR1@600, no "B:"): Slurm sends it to every process of the job's steps.
# Tested on Slurm 22.05 (tests/test_slurm_resume.py): USR1's default action kills the step's snakemake, bash and
# torchrun at once; the step then ends (a cgroup cluster kills the trainer mid-save) and the job fails before the
# checkpoint is complete. So snakemake ignores USR1 here; SIG_IGN is inherited across fork and exec by the rule's
# shell and torchrun, and only the trainer installs a handler (save, exit 75, the retry resumes). Ranks that srun
# starts on other nodes inherit nothing: the multi-node launcher ignores USR1 itself (TrainJob.launcher).
signal.signal(signal.SIGUSR1, signal.SIG_IGN)

try:
    L = Layout(config)
    TRAIN = train_jobs(L)
    CONVERSION = conversion(L, TRAIN)
    DEMO_BASE_OVERRIDES = demo_base_overrides(L)
    # Benchmark -> run folders of the MLPerf benchmark workloads (rules/submission.smk)
    SUBMISSION_RUNS = L.submission_runs({w: job.cfg.benchmark_name for w, job in TRAIN.items()})
except PipelineInputError as err:
    raise WorkflowError(f"invalid config: {err}")
for _warning in data_length_mismatches(L, TRAIN):
    logger.warning(f"config: {_warning}")


wildcard_constraints:
    c4_name=r"c4-train\.en_\d+|c4-validation-\d+-samples\.en",
    group=r"\d+",
    seed=r"\d+",
    govreport_split="|".join(paths.GOVREPORT_SPLITS),
    ultrachat_split="|".join(paths.ULTRACHAT_SPLITS),


# Scheduling priority of the demo's longest chain (data -> base model -> conversion -> LoRA): with few cores, jobs off
# that chain (C4, pretraining, SFT) wait for a free core instead of delaying it.
CRITICAL_PATH_PRIORITY = 10


def rule_benchmark(name):
    return f"{paths.RULE_BENCHMARK_DIR}/{name}"


def parent_of_first_output(wildcards, output):
    return str(Path(output[0]).parent)
