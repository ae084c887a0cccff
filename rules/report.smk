# Figures of the Snakemake report (`snakemake --report report.html`): loss and throughput of every training run,
# conversion parity, data statistics and rule benchmarks; the score table is flagged in rules/scores.smk.
# The benchmark figure waits for every other stage's final outputs: it reads their rules' `benchmark:` files.

wildcard_constraints:
    report_workload="|".join(L.train_workloads()),



# `snakemake report_figures`: the figures only (then `snakemake --report report.html`).
rule report_figures:
    input:
        L.report_figures(),


rule plot_train_loss:
    input:
        steps=f"{paths.TRAIN_DIR}/{{report_workload}}/seed{{seed}}/steps.csv",
        evals=f"{paths.TRAIN_DIR}/{{report_workload}}/seed{{seed}}/eval.csv",
        metrics=f"{paths.TRAIN_DIR}/{{report_workload}}/seed{{seed}}/metrics.json",
    output:
        report(
            f"{paths.REPORT_DIR}/train/{{report_workload}}/seed{{seed}}/loss.svg",
            caption="../report/loss.rst",
            category="Training",
            subcategory="{report_workload}",
            labels={"workload": "{report_workload}", "seed": "{seed}", "figure": "loss curve"},
        ),
    log:
        "logs/report/loss_{report_workload}_seed{seed}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.report.report_plots loss --steps {input.steps} --evals {input.evals}"
        " --metrics {input.metrics} --out {output} > {log} 2>&1"


rule plot_train_throughput:
    input:
        steps=f"{paths.TRAIN_DIR}/{{report_workload}}/seed{{seed}}/steps.csv",
        metrics=f"{paths.TRAIN_DIR}/{{report_workload}}/seed{{seed}}/metrics.json",
    output:
        report(
            f"{paths.REPORT_DIR}/train/{{report_workload}}/seed{{seed}}/throughput.svg",
            caption="../report/throughput.rst",
            category="Training",
            subcategory="{report_workload}",
            labels={"workload": "{report_workload}", "seed": "{seed}", "figure": "throughput"},
        ),
    log:
        "logs/report/throughput_{report_workload}_seed{seed}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.report.report_plots throughput --steps {input.steps} --metrics {input.metrics}"
        " --out {output} > {log} 2>&1"


rule plot_conversion_parity:
    input:
        paths.CONVERT_PARITY,
    output:
        report(
            f"{paths.REPORT_DIR}/convert/parity.svg",
            caption="../report/parity.rst",
            category="Conversion",
            labels={"workload": "conversion", "seed": str(config["demo"]["seed"]), "figure": "logits parity"},
        ),
    log:
        "logs/report/parity.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.report.report_plots parity --parity {input} --out {output} > {log} 2>&1"


rule plot_data_statistics:
    input:
        unpack(lambda w: L.report_data_stats_inputs()),
    output:
        svg=report(
            f"{paths.REPORT_DIR}/data/statistics.svg",
            caption="../report/data_statistics.rst",
            category="Data",
            labels={"workload": "all", "seed": "-", "figure": "data statistics"},
        ),
        csv=report(
            f"{paths.REPORT_DIR}/data/statistics.csv",
            caption="../report/data_statistics.rst",
            category="Data",
            labels={"workload": "all", "seed": "-", "figure": "data statistics (CSV)"},
        ),
    log:
        "logs/report/data_statistics.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.report.report_plots data-stats --c4 {input.c4} --govreport {input.govreport}"
        " --govreport-packed {input.govreport_packed} --ultrachat {input.ultrachat} --openorca {input.openorca}"
        " --out {output.svg} --out-csv {output.csv} > {log} 2>&1"


rule plot_rule_benchmarks:
    input:
        L.stage_targets(),
    output:
        report(
            f"{paths.REPORT_DIR}/benchmarks/rules.svg",
            caption="../report/benchmarks.rst",
            category="Benchmarks",
            labels={"workload": "all", "seed": "-", "figure": "rule benchmarks"},
        ),
    params:
        folder=paths.RULE_BENCHMARK_DIR,
    log:
        "logs/report/benchmarks.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.report.report_plots benchmarks --dir {params.folder} --out {output} > {log} 2>&1"


rule score_table_html:
    input:
        rules.score_table.output.csv,
    output:
        report(
            f"{paths.REPORT_DIR}/scores/scores.html",
            caption="../report/scores.rst",
            category="Scores",
            labels={"workload": "all", "seed": "all", "figure": "score table"},
        ),
    log:
        "logs/report/score_table_html.log",
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.report.report_plots table-html --csv {input} --title 'Score table' --out {output}"
        " > {log} 2>&1"
