"""Checkpoint conversion between Hugging Face Llama and megatron-core, and its logits parity gate.

CLI: python -m workflow_scripts.convert hf-to-mcore|mcore-to-hf ... (see conversion.py)."""
