"""Parity gate of a conversion: the same token batch through the HF model (transformers) and the converted
megatron-core model; writes parity.json only if max |logit diff| is within tolerance.

    python -m workflow_scripts.convert.verify_conversion --hf DIR --mcore DIR --out parity.json --tolerance 1e-4 --seed N
    torchrun --nproc-per-node 2 -m workflow_scripts.convert.verify_conversion ... --tp 2   (gloo on CPU)

Both models run in fp32 whatever the checkpoint dtype, so 1e-4 holds for bf16 checkpoints too. The megatron model
is loaded at the given TP with PP 1 (a torch_dist checkpoint reshards to any layout on load). On CPU it uses the
local layer spec, on a GPU the spec recorded at conversion (TE by default), with TF32 off.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from workflow_scripts.core.atomic import write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.model.megatron_cpu_compat import causal_attention_mask

log = logging.getLogger("verify_conversion")


def token_batch(vocab_size: int, batch: int, seq_len: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def hf_logits(hf_dir: Path | str, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of the reference implementation (transformers, fp32, eager attention)."""
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    from workflow_scripts.convert import mcore_layout as L
    from workflow_scripts.convert.hf_checkpoint import load_all

    tensors = load_all(hf_dir)
    if L.hf_layer(0, L.HF_QKV_FUSED) in tensors:
        # The MLPerf fused-qkv checkpoint needs remote code in transformers; split it into standard Llama names.
        from workflow_scripts.model.llama_model import load_hf_config

        cfg = load_hf_config(hf_dir)
        for layer in range(cfg.num_layers):
            fused = tensors.pop(L.hf_layer(layer, L.HF_QKV_FUSED))
            for name, part in zip((L.HF_Q, L.HF_K, L.HF_V), L.split_fused_qkv(cfg, fused)):
                tensors[L.hf_layer(layer, name)] = part
        config = HFLlamaConfig.from_pretrained(str(hf_dir))
        config._attn_implementation = "eager"
        model = LlamaForCausalLM(config).float()
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    else:
        model = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(input_ids=tokens).logits.float()


def load_mcore_model(mcore_dir: Path | str, spec: str | None = None, params_dtype: torch.dtype = torch.float32,
                     **config_overrides):
    """GPTModel (fp32 unless told, gathered logits) at the current parallel state, with the checkpoint's weights
    (`config_overrides`: TransformerConfig fields, e.g. fusions)."""
    from megatron.core import dist_checkpointing

    from workflow_scripts.convert.conversion import read_model_config
    from workflow_scripts.model.llama_model import build_gpt_model

    cfg, meta = read_model_config(mcore_dir)
    spec = spec or ("local" if not torch.cuda.is_available() else meta["spec"])
    model = build_gpt_model(cfg, spec, params_dtype=params_dtype, parallel_output=False, **config_overrides)
    state = dist_checkpointing.load(model.sharded_state_dict(), str(mcore_dir))
    model.load_state_dict(state)
    model.eval()
    return model, cfg


def mcore_logits(model, cfg, tokens: torch.Tensor) -> torch.Tensor:
    """Logits on the CPU; the model runs where its parameters are (GPU with the TE spec)."""
    device = next(model.parameters()).device
    batch, seq = tokens.shape
    tokens = tokens.to(device)
    positions = torch.arange(seq, device=device).unsqueeze(0).expand(batch, seq)
    with torch.no_grad():
        out = model(tokens, positions, causal_attention_mask(seq, device))
    return out[..., : cfg.vocab_size].float().cpu()


def compare(reference: torch.Tensor, candidate: torch.Tensor, tolerance: float) -> dict[str, Any]:
    if reference.shape != candidate.shape:
        raise PipelineInputError(f"logit shapes differ: HF {tuple(reference.shape)} vs megatron {tuple(candidate.shape)}")
    diff = (reference - candidate).abs()
    return {
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "argmax_agreement": (reference.argmax(-1) == candidate.argmax(-1)).float().mean().item(),
        "reference_abs_mean": reference.abs().mean().item(),
        "tolerance": tolerance,
        "passed": bool(diff.max().item() <= tolerance),
        "logits_shape": list(reference.shape),
    }


def verify(hf_dir: Path | str, mcore_dir: Path | str, tolerance: float = 1e-4, tp: int = 1, batch: int = 2,
           seq_len: int = 32, seed: int = 0, spec: str | None = None) -> dict[str, Any]:
    """Parity report (on every rank); torch.distributed is set up here if needed (world size = tp)."""
    from workflow_scripts.model.llama_model import init_parallel

    # Transformer Engine runs fp32 GEMMs in TF32 (max |diff| ~4e-3 on the tiny models); compare in true fp32.
    # cuBLAS reads this when CUDA starts, so it only takes effect if set before the first GPU work.
    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
    init_parallel(tp, 1)
    model, cfg = load_mcore_model(mcore_dir, spec)
    tokens = token_batch(cfg.vocab_size, batch, min(seq_len, cfg.max_position_embeddings), seed)
    candidate = mcore_logits(model, cfg, tokens)
    reference = hf_logits(hf_dir, tokens)
    report = compare(reference, candidate, tolerance)
    report.update({"hf": str(hf_dir), "mcore": str(mcore_dir), "tensor_model_parallel_size": tp,
                   "batch": batch, "seq_len": tokens.shape[1], "seed": seed})
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow_scripts.convert.verify_conversion", description=__doc__.split("\n")[0])
    p.add_argument("--hf", required=True, type=Path)
    p.add_argument("--mcore", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="parity.json (written only when the check passes)")
    p.add_argument("--tolerance", type=float, required=True, help="max |logit diff| allowed (fp32 comparison)")
    # --tp, --batch, --seq-len: the rule leaves them to these defaults (no config key states them).
    p.add_argument("--tp", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--seed", type=int, required=True)
    return p


def _body(argv: Sequence[str] | None) -> int:
    from workflow_scripts.model.llama_model import shutdown_parallel

    args = _parser().parse_args(argv)
    try:
        report = verify(args.hf, args.mcore, args.tolerance, args.tp, args.batch, args.seq_len, args.seed)
    finally:
        shutdown_parallel()
    log.info("parity: %s", json.dumps(report, sort_keys=True))
    if not report["passed"]:
        raise PipelineInputError(
            f"{args.mcore}: conversion parity check failed: max |logit diff| {report['max_abs_diff']:.3g} > "
            f"tolerance {args.tolerance:g} (argmax agreement {report['argmax_agreement']:.3f}); not writing {args.out}")
    if int(os.environ.get("RANK", 0)) == 0:
        write_json(args.out, report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
