# OpenOrca -> the MLPerf Inference llama2-70b evaluation dataset (processorca.py): filter, then sample per origin.


rule demo_openorca_parquet:
    output:
        paths.OPENORCA_DEMO_PARQUET,
    params:
        rows_per_origin=config["demo"]["openorca_rows_per_origin"],
        seed=config["demo"]["seed"],
    log:
        "logs/demo/openorca_parquet.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_openorca --out {output} --rows-per-origin {params.rows_per_origin}"
        " --seed {params.seed} > {log} 2>&1"


rule openorca_filter:
    input:
        parquet=L.openorca_parquet(),
        tokenizer=L.openorca_tokenizer(),
    output:
        full=f"{paths.OPENORCA_PREFIX}.full.parquet",
        stats=f"{paths.OPENORCA_DIR}/filter_stats.json",
    params:
        seqlen_limit=config["openorca"]["seqlen_limit"],
        bos_token=config["openorca"]["bos_token"],
        response_init_token=L.openorca_response_init_token(),
    log:
        "logs/openorca/filter.log",
    benchmark:
        rule_benchmark("openorca_filter.tsv")
    threads: 2
    resources:
        mem_mb=4096,
        runtime=120,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.openorca_filter --input {input.parquet} --tokenizer {input.tokenizer}"
        " --output {output.full} --stats {output.stats} --seqlen-limit {params.seqlen_limit}"
        " --bos-token '{params.bos_token}' --response-init-token '{params.response_init_token}'"
        " --threads {threads} > {log} 2>&1"


rule openorca_sample:
    input:
        full=rules.openorca_filter.output.full,
        filter_stats=rules.openorca_filter.output.stats,
    output:
        **L.openorca_outputs(),
    params:
        total=config["openorca"]["total_samples"],
        calibration_size=config["openorca"]["calibration_size"],
        seed=config["openorca"]["sample_seed"],
        calibration_seed=config["openorca"]["calibration_seed"],
    log:
        "logs/openorca/sample.log",
    resources:
        mem_mb=2048,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.openorca_sample --input {input.full} --filter-stats {input.filter_stats}"
        " --total-samples {params.total} --calibration-size {params.calibration_size} --seed {params.seed}"
        " --calibration-seed {params.calibration_seed} --output {output.pkl} --output-parquet {output.parquet}"
        " --calibration {output.calibration} --stats {output.stats} > {log} 2>&1"
