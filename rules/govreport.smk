# GovReport for the Llama 2 70B LoRA workload: raw rows -> packed parquet (input_ids, labels) -> MLPerf .npy per split.
# config govreport.source: "raw" runs all three steps; "packed" starts from the published packed parquet files.


rule demo_govreport:
    input:
        # The tokenizer of the pack step: the validation rows are drawn to pack into exactly N rows with it.
        tokenizer=L.govreport_tokenizer(),
    output:
        train=L.govreport_demo_rows("train"),
        validation=L.govreport_demo_rows("validation"),
    params:
        out=parent_of_first_output,
        train_docs=config["demo"]["govreport_train_docs"],
        validation_rows=config["demo"]["govreport_validation_rows"],
        seq_length=config["govreport"]["seq_length"],
        num_proc=config["govreport"]["validation_num_proc"],
        batch_size=config["govreport"]["map_batch_size"],
        seed=config["demo"]["seed"],
        bos_token=config["govreport"]["bos_token"],
        eos_token=config["govreport"]["eos_token"],
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/govreport.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_govreport --out {params.out} --tokenizer {input.tokenizer}"
        " --train-docs {params.train_docs} --validation-rows {params.validation_rows} --seq-length {params.seq_length}"
        " --num-proc {params.num_proc} --batch-size {params.batch_size} --seed {params.seed}"
        " --bos-token '{params.bos_token}' --eos-token '{params.eos_token}' > {log} 2>&1"


rule govreport_hub:
    output:
        f"{paths.GOVREPORT_DIR}/hub/{{govreport_split}}.parquet",
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
        rows=lambda w: L.govreport_source_file(w.govreport_split),
        tokenizer=L.govreport_tokenizer(),
    output:
        parquet=f"{paths.GOVREPORT_DIR}/packed/{{govreport_split}}.parquet",
        stats=f"{paths.GOVREPORT_DIR}/packed/{{govreport_split}}.stats.json",
    params:
        flags=lambda w: L.govreport_pack_flags(w.govreport_split),
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
        unpack(lambda w: L.govreport_npy_inputs(w.govreport_split)),
    output:
        npy=f"{paths.GOVREPORT_DIR}/{{govreport_split}}.npy",
        stats=f"{paths.GOVREPORT_DIR}/{{govreport_split}}.stats.json",
    params:
        seq_length=config["govreport"]["seq_length"],
        pack_stats=lambda w, input: f"--pack-stats {input.pack_stats}" if "pack_stats" in input.keys() else "",
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
