"""Worker: LoRA on a converted tiny model at the launched TP size; saves logits and adapter grads (global layout)."""
import sys

import torch

from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
from workflow_scripts.model.lora_layers import LoraSettings, apply_lora, gather_adapter_state, load_adapter_state, save_adapter
from workflow_scripts.model.megatron_cpu_compat import causal_attention_mask
from workflow_scripts.convert.verify_conversion import load_mcore_model


def main(mcore_dir: str, out: str, adapter_dir: str) -> None:
    tp = torch.distributed.get_world_size() if torch.distributed.is_initialized() else int(__import__("os").environ["WORLD_SIZE"])
    init_parallel(tp, 1)
    model, cfg = load_mcore_model(mcore_dir)
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, targets=("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"))
    apply_lora(model, settings, seed=3)
    state = gather_adapter_state(model)
    gen = torch.Generator().manual_seed(5)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05 if ".lora_B." in k else v) for k, v in sorted(state.items())}
    load_adapter_state(model, state)
    model.train()
    tokens = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(16).unsqueeze(0).expand(2, 16)
    logits = model(tokens, positions, causal_attention_mask(16))[..., : cfg.vocab_size].float()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), tokens[:, 1:].reshape(-1))
    loss.backward()
    grads = gather_adapter_state(model, grads=True)
    frozen = [n for n, p in model.named_parameters() if p.grad is not None and ".lora." not in n]
    save_adapter(model, settings, adapter_dir)
    if torch.distributed.get_rank() == 0:
        torch.save({"logits": logits.detach(), "loss": loss.item(), "grads": grads, "frozen_with_grad": frozen}, out)
    shutdown_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:])
