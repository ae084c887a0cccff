"""Run under `torchrun --nproc-per-node 2` (gloo) by tests/test_generate_parallel.py (one launch, two layouts).

    generate_tp_driver.py LOGITS.pt DP_DIR TP_DIR GENERATE_ARGS...

1. DP 2 (--tp 1): `python -m workflow_scripts.inference.generate GENERATE_ARGS` writes DP_DIR/acc.json (LoadGen's
   accuracy log), summary.txt, detail.txt and stats.json.
2. TP 2 (--tp 2, one data-parallel group): the same into TP_DIR.
3. TP 2: first-step logits of every prompt; rank 0 saves them to LOGITS.pt.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch


@torch.no_grad()
def first_step_logits(model, vocab_size: int, prompts: list[list[int]]) -> torch.Tensor:
    """Logits of the first generated position of each prompt (full forward, no cache), [samples, vocab]."""
    from workflow_scripts.inference.static_decode import _forward

    device = next(model.parameters()).device
    return torch.stack([_forward(model, torch.tensor([p], device=device), 0)[0, -1, :vocab_size].float().cpu()
                        for p in prompts])


def outputs(out: Path) -> list[str]:
    """The output options of one generation into folder `out` (LoadGen's three logs and the stats)."""
    return ["--out", str(out / "acc.json"), "--summary", str(out / "summary.txt"), "--detail", str(out / "detail.txt"),
            "--stats", str(out / "stats.json")]


def main() -> None:
    warnings.filterwarnings("ignore")
    from workflow_scripts.inference import generate as G
    from workflow_scripts.model.llama_model import shutdown_parallel

    logits_out, dp_dir, tp_dir, *common = sys.argv[1:]
    for tp, out in ((1, Path(dp_dir)), (2, Path(tp_dir))):
        G.generate_files(G.parser().parse_args(
            [*common, "--tp", str(tp), *outputs(out)]))
    args = G.parser().parse_args([*common, "--out", "-", "--summary", "-", "--detail", "-", "--stats", "-"])
    model, cfg = G.load_model(args.mcore, tp=2)
    logits = first_step_logits(model, cfg.vocab_size, G.read_prompts(args.samples))
    if torch.distributed.get_rank() == 0:
        torch.save(logits, logits_out)
    shutdown_parallel()


if __name__ == "__main__":
    main()
