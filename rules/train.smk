# Training on megatron-core: Llama 2 70B LoRA on GovReport and Llama 3.1 pretraining on C4 (workflow_scripts/train/trainer.py).
# Checkpoints live in a params folder (checkpoints/...), not an output: Snakemake deletes a job's outputs before a
# rerun, and a rerun must resume from them.

ALL_TARGETS.extend(train_outputs("lora") + train_outputs("pretrain") + train_outputs("sft"))


rule train_lora:
    input:
        train="results/govreport/train.npy",
        validation="results/govreport/validation.npy",
        checkpoint=CONVERT_MCORE,
        parity=CONVERT_PARITY,  # nothing trains on a conversion that failed its logits check
    output:
        expand("results/train/lora/seed{{seed}}/{name}", name=TRAIN_FILES),
        adapter=directory("results/train/lora/seed{seed}/adapter"),
    params:
        recipe=config["train"]["lora"]["recipe"],
        overrides=lora_overrides,
        launcher=lora_launcher,
        out=parent_of_first_output,
        ckpt_dir=lora_checkpoint_dir,
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/train/lora_seed{seed}.log",
    benchmark:
        rule_benchmark("train_lora_seed{seed}.tsv")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        nodes=train_nodes("lora"),
        mpi=train_mpi("lora"),
    conda:
        "../envs/train.yaml"
    shell:
        "{params.launcher} -m workflow_scripts.train --recipe {params.recipe} --overrides-inline '{params.overrides}'"
        " --out {params.out} --ckpt-dir {params.ckpt_dir} > {log} 2>&1"


rule pretrain_index_cache:
    input:
        pretrain_inputs,
        validation=expand("{p}.{ext}", p=pretrain_validation_prefix(), ext=("bin", "idx")),
    output:
        "results/train/pretrain/index_cache.json",
    params:
        recipe=config["train"]["pretrain"]["recipe"],
        overrides=index_cache_overrides,
    log:
        "logs/train/pretrain_index_cache.log",
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow_scripts.train.build_index_cache --recipe {params.recipe} --overrides-inline '{params.overrides}'"
        " --done {output} > {log} 2>&1"


rule train_pretrain:
    input:
        pretrain_inputs,
        validation=expand("{p}.{ext}", p=pretrain_validation_prefix(), ext=("bin", "idx")),
        index_cache="results/train/pretrain/index_cache.json",
    output:
        expand("results/train/pretrain/seed{{seed}}/{name}", name=TRAIN_FILES),
        model=directory("results/train/pretrain/seed{seed}/checkpoint"),
    params:
        recipe=config["train"]["pretrain"]["recipe"],
        overrides=pretrain_overrides,
        launcher=pretrain_launcher,
        out=parent_of_first_output,
        ckpt_dir=pretrain_checkpoint_dir,
    log:
        "logs/train/pretrain_seed{seed}.log",
    benchmark:
        rule_benchmark("train_pretrain_seed{seed}.tsv")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        nodes=train_nodes("pretrain"),
        mpi=train_mpi("pretrain"),
    conda:
        "../envs/train.yaml"
    shell:
        "{params.launcher} -m workflow_scripts.train --recipe {params.recipe} --overrides-inline '{params.overrides}'"
        " --out {params.out} --ckpt-dir {params.ckpt_dir} > {log} 2>&1"


rule train_sft:
    input:
        train="results/ultrachat/train.parquet",
        test="results/ultrachat/test.parquet",
        tokenizer="results/ultrachat/tokenizer/tokenizer.json",  # ChatML tokens added: the model's rows grow to it
        checkpoint=CONVERT_MCORE,
        parity=CONVERT_PARITY,
    output:
        expand("results/train/sft/seed{{seed}}/{name}", name=TRAIN_FILES),
        adapter=directory("results/train/sft/seed{seed}/adapter"),
    params:
        recipe=config["train"]["sft"]["recipe"],
        overrides=sft_overrides,
        launcher=sft_launcher,
        out=parent_of_first_output,
        ckpt_dir=sft_checkpoint_dir,
    log:
        "logs/train/sft_seed{seed}.log",
    benchmark:
        rule_benchmark("train_sft_seed{seed}.tsv")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        nodes=train_nodes("sft"),
        mpi=train_mpi("sft"),
    conda:
        "../envs/train.yaml"
    shell:
        "{params.launcher} -m workflow_scripts.train --recipe {params.recipe} --overrides-inline '{params.overrides}'"
        " --out {params.out} --ckpt-dir {params.ckpt_dir} > {log} 2>&1"
