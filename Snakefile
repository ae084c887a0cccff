# MLPerf-style LLM pipeline: raw data -> scored, compliant results. Table of contents only; rules live in rules/.
from snakemake.utils import min_version

from workflow_scripts.core.config_check import validate_config

min_version("9.0")


configfile: "config.yaml"


# `snakemake --report report.html`: this text heads the report; rules/report.smk makes its figures.
report: "report/workflow.rst"


# Before any rule: a wrong key or type stops here with the key's dotted name.
validate_config(config, f"{workflow.basedir}/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo_data.smk"
include: "rules/c4_consolidate.smk"
include: "rules/c4_tokenize.smk"
include: "rules/govreport.smk"
include: "rules/ultrachat.smk"
include: "rules/openorca.smk"
include: "rules/convert.smk"
include: "rules/train.smk"
include: "rules/demo_base.smk"
include: "rules/inference.smk"
include: "rules/scores.smk"
include: "rules/compliance.smk"
include: "rules/submission.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        L.targets(),
