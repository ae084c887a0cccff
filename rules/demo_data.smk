# Generated demo inputs (used when the config names no real data) and the demo tokenizer trained on them.


rule demo_c4_corpus:
    output:
        train=L.c4_demo_raw("train"),
        validation=L.c4_demo_raw("validation"),
    params:
        out=parent_of_first_output,
        train_shards=config["c4"]["train_shards"],
        validation_shards=config["c4"]["validation_shards"],
        train_docs=config["demo"]["c4_docs_per_train_shard"],
        validation_docs=config["demo"]["c4_docs_per_validation_shard"],
        seed=config["demo"]["seed"],
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/c4_corpus.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_c4_corpus --out {params.out}"
        " --train-shards {params.train_shards} --validation-shards {params.validation_shards}"
        " --train-docs {params.train_docs} --validation-docs {params.validation_docs} --seed {params.seed}"
        " > {log} 2>&1"


rule demo_tokenizer:
    input:
        # The demo's train shards are enough text for a few-thousand-token BPE.
        shards=L.c4_demo_raw("train"),
    output:
        paths.DEMO_TOKENIZER,
    params:
        vocab_size=config["demo"]["tokenizer_vocab_size"],
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/demo/tokenizer.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.demo.demo_tokenizer --out {output} --vocab-size {params.vocab_size} {input.shards} > {log} 2>&1"
