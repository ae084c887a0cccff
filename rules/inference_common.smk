# Paths and input functions of the inference-accuracy stage (rules/inference.smk).
INFERENCE_DIR = "results/inference"
INFERENCE = config.get("inference", {})


def inference_checkpoint(wildcards=None):
    """The configured megatron-core checkpoint (e.g. a LoRA-merged model), or the converted one of `convert:`."""
    return INFERENCE.get("checkpoint", "") or CONVERT_MCORE


def inference_gate(wildcards=None):
    """The converted model is used only once its parity check passed; a configured checkpoint has no gate here."""
    return [] if INFERENCE.get("checkpoint", "") else [CONVERT_PARITY]


def inference_samples(wildcards=None):
    return f"{OPENORCA_PREFIX}.sampled_{OPENORCA_TOTAL}.pkl"
