# The demo's stand-in for a pretrained HF Llama 2 (used when convert.hf_checkpoint is empty): a tiny Llama trained as
# a language model on the packed demo GovReport train rows, then exported to HF format by the project's own converter.
# The DAG then converts it back with the parity gate, fine-tunes it with LoRA, and generates with it, as with a real
# checkpoint. (A random tiny model cannot reach the LoRA target: its frozen random output layer caps every logit.)


rule demo_base_model:
    input:
        train="results/govreport/train.npy",
        validation="results/govreport/validation.npy",
    output:
        metrics=f"{DEMO_DIR}/base/metrics.json",
        model=directory(f"{DEMO_DIR}/base/checkpoint"),
    params:
        overrides=demo_base_overrides,
        out=parent_of_first_output,
        ckpt_dir="checkpoints/demo_base",
    log:
        "logs/demo/base_model.log",
    benchmark:
        "benchmarks/rules/demo_base_model.tsv"
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
        f"{DEMO_DIR}/base/checkpoint",
    output:
        directory(CONVERT_DEMO_HF),
    log:
        "logs/demo/base_to_hf.log",
    conda:
        "../envs/convert.yaml"
    shell:
        "python -m workflow_scripts.convert mcore-to-hf --mcore {input} --out {output} > {log} 2>&1"
