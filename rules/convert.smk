# HF Llama -> megatron-core checkpoint for the training layout, gated by a logits parity check (parity.json).
# Training rules take CONVERT_PARITY as input, so nothing trains on a conversion that scrambled heads.
ALL_TARGETS.append(CONVERT_PARITY)


rule convert_hf_to_mcore:
    input:
        hf=convert_hf_checkpoint,
    output:
        directory(CONVERT_MCORE),
    params:
        tp=config["convert"]["tp"],
        pp=config["convert"]["pp"],
        spec=config["convert"]["spec"],
        vocab_multiple=config["convert"].get("make_vocab_size_divisible_by", 128),
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
        hf=convert_hf_checkpoint,
        mcore=CONVERT_MCORE,
    output:
        CONVERT_PARITY,
    params:
        tolerance=config["convert"].get("tolerance", 1.0e-4),
        seed=config["demo"].get("seed", 1234),
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/convert/verify_conversion.log",
    benchmark:
        rule_benchmark("verify_conversion.tsv")
    threads: 1
    resources:
        mem_mb=4096,
        runtime=60,
    conda:
        "../envs/convert.yaml"
    shell:
        "python -m workflow_scripts.convert.verify_conversion --hf {input.hf} --mcore {input.mcore} --out {output}"
        " --tolerance {params.tolerance} --seed {params.seed} > {log} 2>&1"
