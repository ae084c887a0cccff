# Paths and input functions of the scoring stage (rules/scores.smk, rules/compliance.smk).
SCORES_DIR = "results/scores"
COMPLIANCE_DIR = f"{SCORES_DIR}/compliance"


def compliance_verdicts(wildcards=None):
    """One verdict per llama2_70b_lora seed (rules/compliance.smk)."""
    return [f"{COMPLIANCE_DIR}/lora/seed{seed}.json" for seed in config["train"]["lora"]["seeds"]]


def score_train_metrics(wildcards=None):
    """metrics.json of every configured training run, if the training rules are part of this workflow."""
    if "train_runs" not in globals():
        return []
    return [f"{run}/metrics.json" for w in ("lora", "pretrain", "sft") if w in config["train"] for run in train_runs(w)]


def score_compliance(wildcards=None):
    """The compliance verdicts, if rules/compliance.smk is included (it sets COMPLIANCE_RULESET)."""
    return compliance_verdicts() if "COMPLIANCE_RULESET" in globals() else []
