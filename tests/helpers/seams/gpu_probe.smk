# Test-only rule of tests/test_slurm_profile.py, included only by that test's copies of the workflow (it appends an
# include line to the copy's Snakefile). Its Slurm profile marks it as a GPU rule: its job must see a GPU.
rule slurm_gpu_probe:
    output:
        "results/testing/gpu_probe.json",
    log:
        "logs/testing/gpu_probe.log",
    # What the parity check of a GPU-sized model asks for (workflow_scripts/dag/train_jobs.py verify_resources).
    resources:
        gpu=1,
    conda:
        "../../../envs/data.yaml"
    shell:
        "python tests/helpers/seams/gpu_probe.py --out {output} > {log} 2>&1"
