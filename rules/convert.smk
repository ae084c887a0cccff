# HF Llama -> megatron-core checkpoint for the training layout, gated by a logits parity check (parity.json).
# Training rules take the parity file as input, so nothing trains on a conversion that scrambled heads. The layout
# (TP, PP, layer spec) is the training config's (workflow_scripts/dag/train_jobs.py: conversion).


rule convert_hf_to_mcore:
    input:
        hf=L.convert_hf_checkpoint(),
    output:
        directory(paths.CONVERT_MCORE),
    params:
        tp=CONVERSION.tp,
        pp=CONVERSION.pp,
        spec=CONVERSION.spec,
        vocab_multiple=config["convert"]["make_vocab_size_divisible_by"],
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/convert/hf_to_mcore.log",
    benchmark:
        rule_benchmark("convert_hf_to_mcore.tsv")
    threads: 2
    resources:
        mem_mb=4096,
        runtime=120,
    conda:
        "../envs/convert.yaml"
    shell:
        "python -m workflow_scripts.convert hf-to-mcore --hf {input.hf} --out {output} --tp {params.tp}"
        " --pp {params.pp} --spec {params.spec} --make-vocab-size-divisible-by {params.vocab_multiple}"
        " --threads {threads} > {log} 2>&1"


rule verify_conversion:
    input:
        hf=L.convert_hf_checkpoint(),
        mcore=paths.CONVERT_MCORE,
    output:
        paths.CONVERT_PARITY,
    params:
        tolerance=config["convert"]["tolerance"],
        seed=config["demo"]["seed"],
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/convert/verify_conversion.log",
    benchmark:
        rule_benchmark("verify_conversion.tsv")
    threads: 1
    resources:
        runtime=120,
        **verify_resources(CONVERSION),
    conda:
        "../envs/convert.yaml"
    shell:
        "python -m workflow_scripts.convert.verify_conversion --hf {input.hf} --mcore {input.mcore} --out {output}"
        " --tolerance {params.tolerance} --seed {params.seed} > {log} 2>&1"
