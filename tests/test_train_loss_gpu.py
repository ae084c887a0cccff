"""On a GPU with Transformer Engine (skipped elsewhere): the fused cross-entropy the te spec trains with gives the
per-token losses and gradients of the unfused path, on bf16 logits as the model produces them."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU with Transformer Engine")


def test_fused_cross_entropy_equals_the_unfused_losses_and_gradients():
    pytest.importorskip("transformer_engine")
    from workflow_scripts.llama_model import init_parallel, shutdown_parallel
    from workflow_scripts.train_loss import logits_losses, te_losses

    init_parallel(1, 1)
    try:
        torch.manual_seed(0)
        logits = (torch.randn(512, 2, 32000, device="cuda") * 3).to(torch.bfloat16).requires_grad_(True)
        targets = torch.randint(0, 32000, (512, 2), device="cuda")
        fused = te_losses(logits, targets)
        (fused_grad,) = torch.autograd.grad(fused.sum(), logits)
        plain = logits_losses(logits, targets, 32000)
        (plain_grad,) = torch.autograd.grad(plain.sum(), logits)
    finally:
        shutdown_parallel()
    assert fused.shape == plain.shape == (512, 2)
    assert torch.allclose(fused.float(), plain.float(), atol=2e-3, rtol=1e-4)
    assert torch.allclose(fused_grad.float(), plain_grad.float(), atol=1e-3)
