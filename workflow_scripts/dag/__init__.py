"""The DAG built from the config at parse time: result paths, targets, rule arguments, and each training job's
config, launch line and Slurm request (rules/common.smk builds them once)."""
