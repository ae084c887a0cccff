# C4 consolidation (MLPerf Llama 3.1 utils/consolidate_data.sh): 1024 raw train shards -> 8 files by byte
# concatenation, and the first N validation documents -> c4-validation-{N}-samples.en.json.gz. Every raw shard is
# decompressed in full on `threads` threads (gzip CRC-32 and length) while it is copied; the manifests' line ranges
# let tokenization errors name the raw shard and its line.


rule c4_consolidate_train:
    input:
        lambda w: L.c4_train_group_shards(int(w.group)),
    output:
        data=f"{paths.C4_CONSOLIDATED}/c4-train.en_{{group}}.json.gz",
        manifest=f"{paths.C4_CONSOLIDATED}/c4-train.en_{{group}}.sources.json",
    log:
        "logs/c4/consolidate_train_{group}.log",
    benchmark:
        rule_benchmark("c4_consolidate_train_{group}.tsv")
    threads: 4
    resources:
        mem_mb=1000,
        runtime=120,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.c4_consolidate train --out {output.data} --manifest {output.manifest}"
        " --threads {threads} {input} > {log} 2>&1"


rule c4_consolidate_validation:
    input:
        L.c4_validation_shards(),
    output:
        data=f"{paths.C4_CONSOLIDATED}/c4-validation-{{docs}}-samples.en.json.gz",
        manifest=f"{paths.C4_CONSOLIDATED}/c4-validation-{{docs}}-samples.en.sources.json",
    wildcard_constraints:
        docs=r"\d+",
    log:
        "logs/c4/consolidate_validation_{docs}.log",
    benchmark:
        rule_benchmark("c4_consolidate_validation_{docs}.tsv")
    threads: 4
    resources:
        mem_mb=1000,
        runtime=60,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.c4_consolidate validation --docs {wildcards.docs} --out {output.data}"
        " --manifest {output.manifest} --threads {threads} {input} > {log} 2>&1"
