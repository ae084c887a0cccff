# The score table of the DAG run (CSV + Markdown): inference ROUGE, and every training run with its compliance
# verdict when the training (rules/train*.smk) and compliance (rules/compliance.smk) rules are included.
ALL_TARGETS.extend([f"{SCORES_DIR}/scores.csv", f"{SCORES_DIR}/scores.md"])


rule score_table:
    input:
        rouge=f"{INFERENCE_DIR}/rouge.json",
        metrics=score_train_metrics,
        compliance=score_compliance,
    output:
        csv=report(f"{SCORES_DIR}/scores.csv", caption="../report/scores.rst", category="Scores",
                   labels={"workload": "all", "seed": "all", "figure": "score table (CSV)"}),
        md=report(f"{SCORES_DIR}/scores.md", caption="../report/scores.rst", category="Scores",
                  labels={"workload": "all", "seed": "all", "figure": "score table (Markdown)"}),
    log:
        "logs/scores/score_table.log",
    conda:
        "../envs/inference.yaml"
    shell:
        "python -m workflow_scripts.scoring.score_table --rouge {input.rouge} --metrics {input.metrics}"
        " --compliance {input.compliance} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
