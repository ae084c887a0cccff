# The MLPerf Training submission package (`snakemake submission`): the MLPerf benchmark runs' logs in the official
# layout, then mlperf-logging's package checker and result summarizer (unmodified) on it. Their verdict and score are
# recorded, pass or fail (the score table reports both); missing or unreadable logs fail the job instead.


rule submission:
    input:
        L.submission_targets(),


rule submission_package:
    input:
        L.submission_inputs(SUBMISSION_RUNS),
    output:
        package=directory(L.submission_folder()),
        manifest=paths.SUBMISSION_MANIFEST,
    params:
        flags=L.submission_flags(SUBMISSION_RUNS),
        root=workflow.basedir,
    log:
        "logs/submission/package.log",
    conda:
        "../envs/inference.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m workflow_scripts.scoring.submission_package --out {output.package} --manifest {output.manifest}"
        " --source-root {params.root} {params.flags} > {log} 2>&1"


rule package_check:
    input:
        rules.submission_package.output.package,
    output:
        paths.PACKAGE_CHECK,
    params:
        flags=L.package_check_flags(),
    log:
        "logs/submission/package_check.log",
    conda:
        "../envs/inference.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "python -m workflow_scripts.scoring.package_check check --package {input} {params.flags} --out {output}"
        " > {log} 2>&1"


rule submission_summary:
    input:
        package=rules.submission_package.output.package,
        manifest=rules.submission_package.output.manifest,
        check=rules.package_check.output[0],
    output:
        json=paths.SUBMISSION_SUMMARY,
        csv=paths.SUBMISSION_SUMMARY_CSV,
    params:
        ruleset=config["submission"]["ruleset"],
    log:
        "logs/submission/summary.log",
    conda:
        "../envs/inference.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "python -m workflow_scripts.scoring.package_check summarize --package {input.package} --manifest"
        " {input.manifest} --check {input.check} --ruleset {params.ruleset} --out {output.json}"
        " --out-csv {output.csv} > {log} 2>&1"
