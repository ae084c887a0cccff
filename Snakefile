# MLPerf-style LLM pipeline: raw data -> scored, compliant results. Table of contents only; rules live in rules/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo_data.smk"
include: "rules/c4_consolidate.smk"
include: "rules/c4_tokenize.smk"


rule all:
    default_target: True
    input:
        all_targets(),
