# The score table of the DAG run (CSV + Markdown): inference ROUGE, every training run with its compliance verdict
# (rules/compliance.smk), and the submission package's verdict and summarizer score (rules/submission.smk).


rule score_table:
    input:
        rouge=rules.rouge_score.output[0],
        metrics=L.score_train_metrics(),
        compliance=L.compliance_verdicts(),
        package=paths.PACKAGE_CHECK,
        summary=paths.SUBMISSION_SUMMARY,
    output:
        csv=report(f"{paths.SCORES_DIR}/scores.csv", caption="../report/scores.rst", category="Scores",
                   labels={"workload": "all", "seed": "all", "figure": "score table (CSV)"}),
        md=report(f"{paths.SCORES_DIR}/scores.md", caption="../report/scores.rst", category="Scores",
                  labels={"workload": "all", "seed": "all", "figure": "score table (Markdown)"}),
    log:
        "logs/scores/score_table.log",
    conda:
        "../envs/inference.yaml"
    shell:
        "python -m workflow_scripts.scoring.score_table --rouge {input.rouge} --metrics {input.metrics}"
        " --compliance {input.compliance} --package-check {input.package} --summary {input.summary}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
