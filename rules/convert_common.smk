# Paths and input functions of the checkpoint-conversion stage (rules/convert.smk).
CONVERT_DIR = "results/convert"
CONVERT_DEMO_HF = f"{DEMO_DIR}/llama_hf"
CONVERT_MCORE = f"{CONVERT_DIR}/llama_mcore"
CONVERT_PARITY = f"{CONVERT_DIR}/parity.json"


def convert_hf_checkpoint(wildcards=None):
    """The configured HF Llama folder (config.json + safetensors), or the generated tiny demo model."""
    return config["convert"]["hf_checkpoint"] or CONVERT_DEMO_HF
