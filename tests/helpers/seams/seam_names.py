"""The environment variables that switch the test seams on (the tests set them; the product never reads them)."""

# SIGKILL the trainer right after step N of a run that did not resume, after that step's checkpoint decision: a
# crash without any chance to clean up (tests/test_train_lora.py, benchmarks/gpu_parallel_checks.py).
KILL_AT_STEP_ENV = "PIPELINE_TEST_KILL_AT_STEP"
# Seconds to sleep after each step of a run that did not resume, so that a Slurm test job outlasts its walltime
# signal while the resumed job runs at full speed (tests/test_slurm_resume.py).
STEP_SLEEP_ENV = "PIPELINE_TEST_STEP_SLEEP_S"
# `python -m workflow_scripts.<pkg>.<module>` exits 1 when this names <module>, as a crashing job would; it reaches
# Slurm jobs through sbatch's --export=ALL (tests/test_slurm_profile.py).
FAIL_MODULE_ENV = "PIPELINE_TEST_FAIL_MODULE"
PREFIX = "PIPELINE_TEST_"
