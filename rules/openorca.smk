# OpenOrca -> the MLPerf Inference llama2-70b evaluation dataset (processorca.py): filter, then sample per origin.
ALL_TARGETS.extend(
    [
        f"{OPENORCA_PREFIX}.sampled_{OPENORCA_TOTAL}.pkl",
        f"{OPENORCA_PREFIX}.sampled_{OPENORCA_TOTAL}.parquet",
        f"{OPENORCA_PREFIX}.calibration_{OPENORCA_CALIBRATION}.pkl",
        f"{OPENORCA_DIR}/stats.json",
    ]
)


rule demo_openorca_parquet:
    output:
        OPENORCA_DEMO_PARQUET,
    params:
        rows_per_origin=config["demo"].get("openorca_rows_per_origin", 150),
        seed=config["demo"].get("seed", 1234),
    log:
        "logs/demo/openorca_parquet.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_openorca --out {output} --rows-per-origin {params.rows_per_origin}"
        " --seed {params.seed} > {log} 2>&1"


rule openorca_filter:
    input:
        parquet=openorca_parquet,
        tokenizer=openorca_tokenizer,
    output:
        full=f"{OPENORCA_PREFIX}.full.parquet",
        stats=f"{OPENORCA_DIR}/filter_stats.json",
    params:
        seqlen_limit=config["openorca"].get("seqlen_limit", 1024),
        bos_token=config["openorca"].get("bos_token", "<s>"),
        response_init_token=openorca_response_init_token,
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
        pkl=f"{OPENORCA_PREFIX}.sampled_{OPENORCA_TOTAL}.pkl",
        parquet=f"{OPENORCA_PREFIX}.sampled_{OPENORCA_TOTAL}.parquet",
        calibration=f"{OPENORCA_PREFIX}.calibration_{OPENORCA_CALIBRATION}.pkl",
        stats=f"{OPENORCA_DIR}/stats.json",
    params:
        total=OPENORCA_TOTAL,
        calibration_size=OPENORCA_CALIBRATION,
        seed=config["openorca"].get("sample_seed", 1337),
        calibration_seed=config["openorca"].get("calibration_seed", 12345),
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
