# Test-only rules, defined only when a `testing` config switch asks for them (tests/test_slurm_profile.py).
# Real runs never set these switches, so `snakemake --list-rules` and the rule graph do not show them.


if config.get("testing", {}).get("gpu_probe", False):
    ALL_TARGETS.append("results/testing/gpu_probe.json")

    # Marked as a GPU rule by the test's Slurm profile: its job must see CUDA_VISIBLE_DEVICES.
    rule slurm_gpu_probe:
        output:
            "results/testing/gpu_probe.json",
        log:
            "logs/testing/gpu_probe.log",
        conda:
            "../envs/data.yaml"
        shell:
            "python -m workflow_scripts.ops.gpu_probe --out {output} > {log} 2>&1"
