"""Continuous batching against static batches, on one GPU in one call: the generation entry point
(`torchrun -m workflow_scripts.inference.generate`, as rule `generate` runs it) with its defaults (continuous
batching, batch auto) and the same with `--batching static` (one batch at a time, each until its longest output
ends), on outputs of varied length as in the MLPerf run (max_new_tokens 1024, min 1, stop at EOS).

Weights: generate_throughput_7b.py's random Llama-2-7B-shaped checkpoint and prompts (719-898 tokens), except the
output layer's EOS row, scaled so that greedy outputs end at EOS: the scale at which EOS is the argmax at 1/MEAN of
HF's final hidden states of the prompts' positions (MEAN 294, the reference's tokens per sample; random weights'
greedy continuations repeat themselves, so the lengths that result are what they are, and are printed). Both runs
see the same weights and prompts; their greedy tokens, and so their lengths, may differ where bf16 rounding of a
different batch flips a near-tie.

Run on the GPU machine (shared/gpu/README.md brings TE, megatron-core and mlperf-logging to /root/site):
    python3 benchmarks/generate_continuous_batching.py --out $OUT [--from-work /tmp/generate7b]
`--tiny` runs the same steps on CPU with a 2-layer model (a smoke test of the script). Prints a table last.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_throughput_7b as base  # noqa: E402  (its inputs, conversion and entry-point runner)

MEAN_TOKENS = 294  # the reference's tokens per sample (shared/notes/mlperf-spec.md, 4.4)
EOS_ID = 2  # base.make_inputs' tokenizer: '</s>'
CALIBRATION_PROMPTS = 16


def scale_eos_row(work: Path, mean_tokens: int, device: str) -> dict:
    """Scale the HF checkpoint's lm_head EOS row in place (before the conversion) so that EOS wins the argmax at
    1/mean_tokens of the calibration prompts' positions; the scale and the fraction it gives."""
    import pandas as pd
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(work / "hf", torch_dtype=torch.bfloat16).to(device)
    prompts = pd.read_pickle(work / "samples.pkl")["tok_input"].tolist()[:CALIBRATION_PROMPTS]
    weight = model.lm_head.weight
    eos_logits, best_logits = [], []
    with torch.no_grad():
        for ids in prompts:
            hidden = model.model(torch.tensor([ids], device=device)).last_hidden_state[0].float()
            logits = hidden @ weight.float().T
            eos = logits[:, EOS_ID].clone()
            logits[:, EOS_ID] = float("-inf")
            best = logits.max(-1).values
            eos_logits.append(eos)
            best_logits.append(best)
        eos, best = torch.cat(eos_logits), torch.cat(best_logits)
        # EOS scaled by s wins where s * eos > best: for eos > 0, where s > best / eos
        ratios = torch.where(eos > 0, best / eos, torch.full_like(eos, float("inf"))).sort().values
        scale = float(ratios[int(len(ratios) / mean_tokens)])
        weight[EOS_ID] *= scale
        won = float(((eos * scale > best) & (eos > 0)).float().mean())
    model.save_pretrained(work / "hf", safe_serialization=True)
    return {"eos_scale": scale, "positions": len(ratios), "eos_argmax_fraction": won, "target": 1 / mean_tokens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/continuous")))
    p.add_argument("--work", type=Path, default=Path("/tmp/generate_continuous"), help="checkpoints (~27 GB)")
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--mean-tokens", type=int, default=MEAN_TOKENS)
    p.add_argument("--runs", nargs="+", default=["continuous", "static"], help="steps to run, in this order")
    p.add_argument("--from-work", type=Path, help="generate_throughput_7b.py's --work: its checkpoint and prompts "
                   "are copied instead of made again")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: 2-layer model, few samples")
    p.add_argument("--step", choices=["eos"], help=argparse.SUPPRESS)
    a = p.parse_args()
    device = "cpu" if a.tiny else "cuda"
    if a.step == "eos":
        return print(json.dumps(scale_eos_row(a.work, a.mean_tokens, device)))
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.from_work and not (a.work / "samples.pkl").exists():  # the throughput benchmark's unscaled inputs
        shutil.copytree(a.from_work / "hf", a.work / "hf", dirs_exist_ok=True)
        for name in ("tokenizer.json", "samples.pkl"):  # samples last: it marks the inputs complete
            shutil.copy(a.from_work / name, a.work / name)
    if not (a.work / "samples.pkl").exists():
        base._run([sys.executable, base.__file__, "--work", str(a.work), "--samples", str(a.samples), "--step",
                   "inputs"] + (["--tiny"] if a.tiny else []), a.out / "inputs.log", with_site=False)
    if not (a.work / "eos.json").exists():
        me = [sys.executable, __file__, "--work", str(a.work), "--mean-tokens", str(a.mean_tokens), "--step", "eos"]
        base._run(me + (["--tiny"] if a.tiny else []), a.out / "eos.log", with_site=False)
        (a.work / "eos.json").write_text(json.dumps(base._last_json(a.out / "eos.log")))
    base.prepare(a.work, a.out, a.samples, a.tiny)  # the conversion of the scaled checkpoint
    calibration = json.loads((a.work / "eos.json").read_text())
    flags = {"continuous": ["--batch-size", "auto"], "static": ["--batch-size", "auto", "--batching", "static"]}
    done_file = a.work / "results.json"  # a call cut off by its time limit keeps the runs it finished
    results = json.loads(done_file.read_text()) if done_file.exists() else {}
    for name in a.runs:
        if name in results:
            continue
        run = base.project(a.work, a.out, name, flags[name], a.samples, (a.max_new_tokens, 1))
        if "error" not in run:
            stats = json.loads((a.out / f"{name}.json").read_text())
            run.update(samples=stats["samples"], at_eos=stats["stopped_at_eos"])
        results[name] = run
        done_file.write_text(json.dumps(results))
    (a.out / "generate_continuous_batching.json").write_text(json.dumps(
        {"calibration": calibration, "runs": results}, indent=2))
    print(f"command: python3 benchmarks/generate_continuous_batching.py --out $OUT{' --tiny' if a.tiny else ''}")
    print(f"EOS row calibration: {json.dumps(calibration)}")
    print("| run | batch (slots) | samples | new tokens/sample | stopped at EOS | seconds | new tokens/s | vs static |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    static = results.get("static", {}).get("tokens_per_s")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error'][-200:]!r} | | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / static:.2f}x" if static else "-"
        print(f"| {name} | {r['batch']} | {r['samples']} | {r['new_tokens'] / r['samples']:.1f} | {r['at_eos']} | "
              f"{r['seconds']:.1f} | {r['tokens_per_s']:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
