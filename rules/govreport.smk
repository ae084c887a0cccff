# GovReport for the Llama 2 70B LoRA workload: raw rows -> packed parquet (input_ids, labels) -> MLPerf .npy per split.

ALL_TARGETS.extend(f"results/govreport/{split}.{ext}" for split in GOVREPORT_SPLITS for ext in ("npy", "stats.json"))


rule demo_govreport:
    input:
        # The tokenizer of the pack step: the validation rows are drawn to pack into exactly N rows with it.
        tokenizer=govreport_tokenizer,
    output:
        train=f"{DEMO_DIR}/govreport/train.parquet",
        validation=f"{DEMO_DIR}/govreport/validation.parquet",
    params:
        out=parent_of_first_output,
        train_docs=config["demo"].get("govreport_train_docs", 2000),
        validation_rows=config["demo"].get("govreport_validation_rows", 173),
        seq_length=config["govreport"]["seq_length"],
        num_proc=config["govreport"]["validation_num_proc"],
        batch_size=config["govreport"]["map_batch_size"],
        seed=config["demo"].get("seed", 1234),
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/govreport.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_govreport --out {params.out} --tokenizer {input.tokenizer}"
        " --train-docs {params.train_docs} --validation-rows {params.validation_rows} --seq-length {params.seq_length}"
        " --num-proc {params.num_proc} --batch-size {params.batch_size} --seed {params.seed} > {log} 2>&1"


rule govreport_hub:
    output:
        "results/govreport/hub/{govreport_split}.parquet",
    params:
        dataset=config["govreport"]["hub_dataset"],
        name=config["govreport"]["hub_config"],
        revision=config["govreport"]["hub_revision"],
    log:
        "logs/govreport/hub_{govreport_split}.log",
    threads: 4
    resources:
        mem_mb=8192,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.govreport_hub --dataset '{params.dataset}' --name '{params.name}'"
        " --revision '{params.revision}' --split {wildcards.govreport_split} --output {output}"
        " --num-proc {threads} > {log} 2>&1"


rule govreport_pack:
    input:
        rows=govreport_source_file,
        tokenizer=govreport_tokenizer,
    output:
        parquet="results/govreport/packed/{govreport_split}.parquet",
        stats="results/govreport/packed/{govreport_split}.stats.json",
    params:
        flags=govreport_pack_flags,
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/govreport/pack_{govreport_split}.log",
    benchmark:
        rule_benchmark("govreport_pack_{govreport_split}.tsv")
    threads: 2
    resources:
        mem_mb=8192,
        runtime=60,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.govreport_pack --input {input.rows} --tokenizer {input.tokenizer} {params.flags}"
        " --output {output.parquet} --stats {output.stats} --threads {threads} > {log} 2>&1"


rule govreport_npy:
    input:
        unpack(govreport_npy_inputs),
    output:
        npy="results/govreport/{govreport_split}.npy",
        stats="results/govreport/{govreport_split}.stats.json",
    params:
        seq_length=config["govreport"]["seq_length"],
        pack_stats=govreport_pack_stats_flag,
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/govreport/npy_{govreport_split}.log",
    benchmark:
        rule_benchmark("govreport_npy_{govreport_split}.tsv")
    resources:
        mem_mb=4096,
        runtime=30,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.govreport_npy --input {input.data} --output {output.npy} --stats {output.stats}"
        " --seq-length {params.seq_length} {params.pack_stats} > {log} 2>&1"
