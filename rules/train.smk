# Training on megatron-core: Llama 2 70B LoRA on GovReport, Llama 3.1 pretraining on C4 and SFT on UltraChat
# (workflow_scripts/train). One rule definition, made once per configured workload: train_lora, train_pretrain,
# train_sft (the names profiles/slurm uses). Each job's TrainConfig, launch line and Slurm request come from
# workflow_scripts/dag/train_jobs.py. Checkpoints live in a params folder (checkpoints/...), not an output: Snakemake
# deletes a job's outputs before a rerun, and a rerun must resume from them.


for _workload, _job in TRAIN.items():

    rule:
        name:
            f"train_{_workload}"
        input:
            **_job.inputs,
        output:
            [f"{paths.TRAIN_DIR}/{_workload}/seed{{seed}}/{name}" for name in paths.TRAIN_FILES],
            kept=directory(f"{paths.TRAIN_DIR}/{_workload}/seed{{seed}}/{paths.TRAIN_KEPT_DIR[_workload]}"),
        params:
            recipe=_job.section["recipe"],
            overrides=lambda w, job=_job: job.overrides(int(w.seed)),
            launcher=_job.launcher(),
            out=parent_of_first_output,
            ckpt_dir=lambda w, workload=_workload: f"checkpoints/{workload}/seed{w.seed}",
        priority: CRITICAL_PATH_PRIORITY if _workload == "lora" else 0
        log:
            f"logs/train/{_workload}_seed{{seed}}.log",
        benchmark:
            rule_benchmark(f"train_{_workload}_seed{{seed}}.tsv")
        threads: 2
        resources:
            **_job.resources(),
        conda:
            "../envs/train.yaml"
        shell:
            "{params.launcher} -m workflow_scripts.train --recipe {params.recipe} --overrides-inline '{params.overrides}'"
            " --out {params.out} --ckpt-dir {params.ckpt_dir} > {log} 2>&1"


if "pretrain" in TRAIN:

    rule pretrain_index_cache:
        input:
            train=TRAIN["pretrain"].inputs["train"],
            validation=TRAIN["pretrain"].inputs["validation"],
        output:
            TRAIN["pretrain"].inputs["index_cache"],
        params:
            recipe=TRAIN["pretrain"].section["recipe"],
            overrides=index_cache_overrides(TRAIN["pretrain"]),
        log:
            "logs/train/pretrain_index_cache.log",
        resources:
            mem_mb=4000,
            runtime=60,
        conda:
            "../envs/train.yaml"
        shell:
            "python -m workflow_scripts.train.build_index_cache --recipe {params.recipe}"
            " --overrides-inline '{params.overrides}' --done {output} > {log} 2>&1"
