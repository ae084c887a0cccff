# MLPerf Inference llama2-70b accuracy: greedy generation on the OpenOrca samples, then ROUGE as evaluate-accuracy.py.
# The ROUGE file reports pass/fail against the targets; a failing score never fails the rule.
ALL_TARGETS.extend([f"{INFERENCE_DIR}/rouge.json"])


rule generate:
    input:
        checkpoint=inference_checkpoint,
        gate=inference_gate,
        samples=inference_samples,
        tokenizer=openorca_tokenizer,
    output:
        accuracy_log=f"{INFERENCE_DIR}/mlperf_log_accuracy.json",
        stats=f"{INFERENCE_DIR}/generate.json",
    params:
        samples=INFERENCE.get("samples", 0),
        max_new_tokens=INFERENCE.get("max_new_tokens", 1024),
        min_new_tokens=INFERENCE.get("min_new_tokens", 1),
        batch_size=INFERENCE.get("batch_size", 8),
        eos_token=INFERENCE.get("eos_token", "</s>"),
        nproc=INFERENCE.get("nproc_per_node", 1),
        tp=INFERENCE.get("tensor_parallel", 1),
    log:
        "logs/inference/generate.log",
    benchmark:
        rule_benchmark("generate.tsv")
    # One thread per process: a demo-sized model's tiny matmuls run ~25x slower with 2 threads on a shared 2-core
    # machine; on GPUs the CPU threads only launch kernels. The processes are inference.nproc_per_node (one per GPU).
    threads: 1
    resources:
        mem_mb=4096,
        runtime=240,
    conda:
        "../envs/inference.yaml"
    shell:
        "torchrun --standalone --nproc-per-node {params.nproc} -m workflow_scripts.inference.generate --tp {params.tp}"
        " --mcore {input.checkpoint} --samples {input.samples}"
        " --tokenizer {input.tokenizer} --eos-token '{params.eos_token}' --out {output.accuracy_log}"
        " --stats {output.stats} --max-new-tokens {params.max_new_tokens} --min-new-tokens {params.min_new_tokens}"
        " --batch-size {params.batch_size} --limit {params.samples} --threads {threads} > {log} 2>&1"


rule rouge_score:
    input:
        accuracy_log=rules.generate.output.accuracy_log,
        samples=inference_samples,
        tokenizer=openorca_tokenizer,
    output:
        f"{INFERENCE_DIR}/rouge.json",
    params:
        samples=INFERENCE.get("samples", 0),
    log:
        "logs/inference/rouge_score.log",
    threads: 2
    resources:
        mem_mb=2048,
    conda:
        "../envs/inference.yaml"
    shell:
        "python -m workflow_scripts.scoring.rouge_score_eval --samples {input.samples} --accuracy-log {input.accuracy_log}"
        " --tokenizer {input.tokenizer} --out {output} --limit {params.samples} --threads {threads} > {log} 2>&1"
