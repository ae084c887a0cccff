# MLPerf compliance checker (mlperf-logging, unmodified) on every llama2_70b_lora training log; one verdict per seed.
# The verdict records pass or fail (the score table reports it); a missing, truncated or other-benchmark log fails the
# job instead.


rule compliance:
    input:
        log=f"{paths.TRAIN_DIR}/lora/seed{{seed}}/mlperf_log.txt",
    output:
        f"{paths.COMPLIANCE_DIR}/lora/seed{{seed}}.json",
    params:
        benchmark="llama2_70b_lora",
        ruleset=paths.COMPLIANCE_RULESET,
    log:
        "logs/scores/compliance_lora_seed{seed}.log",
    conda:
        "../envs/inference.yaml"
    shell:
        "python -m workflow_scripts.scoring.compliance --record --log {input.log} --benchmark {params.benchmark}"
        " --ruleset {params.ruleset} --out {output} > {log} 2>&1"
