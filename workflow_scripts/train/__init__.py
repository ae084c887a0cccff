"""The trainer for LoRA, pretraining and SFT on megatron-core: recipes, data, loss, optimizers, checkpoints, memory.

CLI: python -m workflow_scripts.train --recipe NAME [--set key=value ...] --out DIR --ckpt-dir DIR (see trainer.py)."""
