# The demo's stand-in for a pretrained HF Llama 2 (used when convert.hf_checkpoint is empty): a tiny Llama trained as
# a language model on the packed demo GovReport train rows, then exported to HF format by the project's own converter.
# The DAG then converts it back with the parity gate, fine-tunes it with LoRA, and generates with it, as with a real
# checkpoint. (A random tiny model cannot reach the LoRA target: its frozen random output layer caps every logit.)


rule demo_base_corpus:
    input:
        govreport=L.govreport_npy("train"),
        tokenizer=L.openorca_tokenizer(),
    output:
        data=paths.DEMO_BASE_CORPUS,
        stats=f"{paths.DEMO_BASE_DIR}/train_corpus.stats.json",
    params:
        govreport_rows=config["demo"]["base_govreport_rows"],
        rows_per_origin=config["demo"]["base_chat_rows_per_origin"],
        seed=config["demo"]["seed"] + 1,
        bos_token=config["openorca"]["bos_token"],
        eos_token=config["inference"]["eos_token"],
        response_init_token=L.openorca_response_init_token(),
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/base_corpus.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_base_corpus --govreport {input.govreport} --tokenizer {input.tokenizer}"
        " --out {output.data} --stats {output.stats} --govreport-rows {params.govreport_rows}"
        " --rows-per-origin {params.rows_per_origin} --seed {params.seed}"
        " --bos-token '{params.bos_token}' --eos-token '{params.eos_token}'"
        " --response-init-token '{params.response_init_token}' > {log} 2>&1"


rule demo_base_model:
    input:
        train=paths.DEMO_BASE_CORPUS,
        validation=L.govreport_npy("validation"),
    output:
        metrics=f"{paths.DEMO_BASE_DIR}/metrics.json",
        model=directory(f"{paths.DEMO_BASE_DIR}/checkpoint"),
    params:
        overrides=DEMO_BASE_OVERRIDES,
        out=parent_of_first_output,
        ckpt_dir="checkpoints/demo_base",
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/base_model.log",
    benchmark:
        rule_benchmark("demo_base_model.tsv")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow_scripts.train --recipe demo_base_cpu --overrides-inline '{params.overrides}'"
        " --out {params.out} --ckpt-dir {params.ckpt_dir} > {log} 2>&1"


rule demo_base_to_hf:
    input:
        rules.demo_base_model.output.model,
    output:
        directory(paths.CONVERT_DEMO_HF),
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/base_to_hf.log",
    conda:
        "../envs/convert.yaml"
    shell:
        "python -m workflow_scripts.convert mcore-to-hf --mcore {input} --out {output} > {log} 2>&1"
