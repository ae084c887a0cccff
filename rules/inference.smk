# MLPerf Inference llama2-70b accuracy: greedy generation on the OpenOrca samples under LoadGen's Offline scenario in
# accuracy mode (LoadGen writes the three mlperf_log_* files), then ROUGE as evaluate-accuracy.py.
# The ROUGE file reports pass/fail against the targets; a failing score never fails the rule.


rule generate:
    input:
        checkpoint=L.inference_checkpoint(),
        gate=L.inference_gate(),
        samples=L.inference_samples(),
        tokenizer=L.openorca_tokenizer(),
    output:
        accuracy_log=f"{paths.INFERENCE_DIR}/mlperf_log_accuracy.json",
        summary=f"{paths.INFERENCE_DIR}/mlperf_log_summary.txt",
        detail=f"{paths.INFERENCE_DIR}/mlperf_log_detail.txt",
        stats=f"{paths.INFERENCE_DIR}/generate.json",
    params:
        samples=config["inference"]["samples"],
        max_new_tokens=config["inference"]["max_new_tokens"],
        min_new_tokens=config["inference"]["min_new_tokens"],
        batch_size=config["inference"]["batch_size"],
        kv_cache=config["inference"]["kv_cache"],
        eos_token=config["inference"]["eos_token"],
        nproc=config["inference"]["nproc_per_node"],
        tp=config["inference"]["tensor_parallel"],
    log:
        "logs/inference/generate.log",
    benchmark:
        rule_benchmark("generate.tsv")
    # One thread per process: a demo-sized model's tiny matmuls run ~25x slower with 2 threads on a shared 2-core
    # machine; on GPUs the CPU threads only launch kernels. The processes are inference.nproc_per_node (one per GPU).
    threads: 1
    resources:
        **generate_resources(L, CONVERSION),
    conda:
        "../envs/inference.yaml"
    shell:
        "torchrun --standalone --nproc-per-node {params.nproc} -m workflow_scripts.inference.generate --tp {params.tp}"
        " --mcore {input.checkpoint} --samples {input.samples}"
        " --tokenizer {input.tokenizer} --eos-token '{params.eos_token}' --out {output.accuracy_log}"
        " --summary {output.summary} --detail {output.detail} --stats {output.stats}"
        " --max-new-tokens {params.max_new_tokens} --min-new-tokens {params.min_new_tokens}"
        " --batch-size {params.batch_size} --kv-cache {params.kv_cache} --limit {params.samples}"
        " --threads {threads} > {log} 2>&1"


rule rouge_score:
    input:
        accuracy_log=rules.generate.output.accuracy_log,
        samples=L.inference_samples(),
        tokenizer=L.openorca_tokenizer(),
    output:
        f"{paths.INFERENCE_DIR}/rouge.json",
    params:
        samples=config["inference"]["samples"],
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
