# UltraChat (ultrachat_200k) for the SFT throughput workload: ChatML tokenizer, then TRL constant-length packing per split.

ALL_TARGETS.extend(
    f"results/ultrachat/{split}.{ext}" for split in ULTRACHAT_SPLITS for ext in ("parquet", "stats.json")
)
ALL_TARGETS.append("results/ultrachat/tokenizer/tokenizer.json")


rule demo_ultrachat:
    output:
        expand("{d}/{name}", d=ULTRACHAT_DEMO_DIR, name=ULTRACHAT_DEMO_NAMES),
    params:
        out=parent_of_first_output,
        train=config["demo"].get("ultrachat_train_conversations", 300),
        test=config["demo"].get("ultrachat_test_conversations", 60),
        seed=config["demo"].get("seed", 1234),
    log:
        "logs/demo/ultrachat.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_ultrachat --out {params.out} --train-conversations {params.train}"
        " --test-conversations {params.test} --seed {params.seed} > {log} 2>&1"


rule ultrachat_tokenizer:
    input:
        ultrachat_base_tokenizer,
    output:
        "results/ultrachat/tokenizer/tokenizer.json",
    params:
        flags=ultrachat_tokenizer_flags,
    log:
        "logs/ultrachat/tokenizer.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.ultrachat_tokenizer --tokenizer {input} --output {output} {params.flags} > {log} 2>&1"


rule ultrachat_pack:
    input:
        files=ultrachat_split_files,
        tokenizer="results/ultrachat/tokenizer/tokenizer.json",
    output:
        parquet="results/ultrachat/{ultrachat_split}.parquet",
        stats="results/ultrachat/{ultrachat_split}.stats.json",
    params:
        flags=ultrachat_pack_flags,
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
