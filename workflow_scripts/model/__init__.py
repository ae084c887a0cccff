"""The Llama model on megatron-core (GPTModel specs, norms, attention), LoRA layers and the CPU compatibility layer."""
