# Tokenization of each consolidated C4 file into Megatron .bin/.idx (MLPerf Llama 3.1 utils/preprocess.sh settings).

C4_TARGETS = [
    f"results/c4/tokenized/{name}_text_document.{ext}"
    for name in c4_consolidated_names()
    for ext in ("bin", "idx", "stats.json")
]
ALL_TARGETS.extend(C4_TARGETS)


# `snakemake c4_data`: only the C4 data path (consolidation + tokenization).
rule c4_data:
    input:
        C4_TARGETS,


rule c4_tokenize:
    input:
        data="results/c4/consolidated/{c4_name}.json.gz",
        tokenizer=c4_tokenizer,
    output:
        bin="results/c4/tokenized/{c4_name}_text_document.bin",
        idx="results/c4/tokenized/{c4_name}_text_document.idx",
        stats="results/c4/tokenized/{c4_name}_text_document.stats.json",
    params:
        prefix=subpath(output.bin, strip_suffix=".bin"),
        flags=c4_tokenize_flags,
        # The consolidation manifest: lets an error name the raw shard and its line.
        sources=c4_sources_manifest,
    log:
        "logs/c4/tokenize_{c4_name}.log",
    benchmark:
        rule_benchmark("c4_tokenize_{c4_name}.tsv")
    threads: 2
    resources:
        mem_mb=2048,
        runtime=240,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.c4_tokenize --input {input.data} --output-prefix {params.prefix}"
        " --tokenizer {input.tokenizer} --threads {threads} {params.flags} --sources {params.sources} > {log} 2>&1"
