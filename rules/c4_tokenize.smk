# Tokenization of each consolidated C4 file into Megatron .bin/.idx (MLPerf Llama 3.1 utils/preprocess.sh settings).


# `snakemake c4_data`: only the C4 data path (consolidation + tokenization).
rule c4_data:
    input:
        L.c4_targets(),


rule c4_tokenize:
    input:
        data=f"{paths.C4_CONSOLIDATED}/{{c4_name}}.json.gz",
        tokenizer=L.c4_tokenizer(),
        # The consolidation manifest (raw shards' line ranges): lets an error name the raw shard and its line.
        sources=f"{paths.C4_CONSOLIDATED}/{{c4_name}}.sources.json",
    output:
        bin=f"{paths.C4_TOKENIZED}/{{c4_name}}_text_document.bin",
        idx=f"{paths.C4_TOKENIZED}/{{c4_name}}_text_document.idx",
        stats=f"{paths.C4_TOKENIZED}/{{c4_name}}_text_document.stats.json",
    params:
        prefix=subpath(output.bin, strip_suffix=".bin"),
        flags=L.c4_tokenize_flags(),
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
        " --tokenizer {input.tokenizer} --threads {threads} {params.flags} --sources {input.sources} > {log} 2>&1"
