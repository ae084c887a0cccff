# UltraChat (ultrachat_200k) for the SFT throughput workload: ChatML tokenizer, then TRL constant-length packing per split.


rule demo_ultrachat:
    output:
        [f"{paths.ULTRACHAT_DEMO_DIR}/{name}" for name in paths.ULTRACHAT_DEMO_NAMES],
    params:
        out=parent_of_first_output,
        train=config["demo"]["ultrachat_train_conversations"],
        test=config["demo"]["ultrachat_test_conversations"],
        seed=config["demo"]["seed"],
    log:
        "logs/demo/ultrachat.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_ultrachat --out {params.out} --train-conversations {params.train}"
        " --test-conversations {params.test} --seed {params.seed} > {log} 2>&1"


rule ultrachat_tokenizer:
    input:
        L.ultrachat_base_tokenizer(),
    output:
        paths.ULTRACHAT_TOKENIZER,
    params:
        flags=L.ultrachat_tokenizer_flags(),
    log:
        "logs/ultrachat/tokenizer.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.ultrachat_tokenizer --tokenizer {input} --output {output} {params.flags} > {log} 2>&1"


rule ultrachat_pack:
    input:
        files=lambda w: L.ultrachat_files[w.ultrachat_split],
        tokenizer=paths.ULTRACHAT_TOKENIZER,
    output:
        parquet=f"{paths.ULTRACHAT_DIR}/{{ultrachat_split}}.parquet",
        stats=f"{paths.ULTRACHAT_DIR}/{{ultrachat_split}}.stats.json",
    params:
        flags=L.ultrachat_pack_flags(),
    log:
        "logs/ultrachat/pack_{ultrachat_split}.log",
    benchmark:
        rule_benchmark("ultrachat_pack_{ultrachat_split}.tsv")
    threads: 2
    resources:
        mem_mb=4096,
        runtime=240,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.ultrachat_pack --tokenizer {input.tokenizer} --output {output.parquet}"
        " --stats {output.stats} --threads {threads} {params.flags} {input.files} > {log} 2>&1"
