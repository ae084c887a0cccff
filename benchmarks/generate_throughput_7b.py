"""Greedy generation on one GPU, side by side in one call: HF transformers `generate` (the reference SUT's way: greedy,
bf16, SDPA, left-padded batches) and the project's generation through its real entry point
(`torchrun -m workflow_scripts.inference.generate`, as rule `generate` runs it) with its defaults (engine fast, batch
auto), plus the reference path (`--engine static`, megatron's StaticInferenceContext), the fast engine at batch 64
and one run per lever (`--runs`: project_fp8 (`--kv-cache fp8`), project_matmul, project_torch_rope, project_eager,
project_sdpa, project_module_swiglu (`--swiglu module`), project_batch_176).

Same weights for all: a random Llama-2-7B-shaped HF checkpoint (bf16, seed 0) converted by the project's own
`python -m workflow_scripts.convert hf-to-mcore`. Same prompts: random ids, lengths uniform over 719-898 tokens (the
range of the issue's probe; OpenOrca itself is not available offline), 256 new tokens each (min = max, so every
sample generates exactly 256). Also checked: the first generated step's logits of 4 prompts (batched, so left-padded
in the fast engine) agree with HF's within the conversion's tolerance (config.yaml convert.tolerance; fp32, TF32 off).

Decode bound: a step reads every weight once (2 N bytes) and the batch's KV cache; at HBM_TB_S a weight-only step
takes 2N / HBM (the issue's bound, rows / 3.1 ms at batch 64). The roofline of a whole run adds the KV reads of
every step and the prefill's GEMM FLOPs at GEMM_TFLOPS; "of roofline" = roofline time / measured time.

Run on the GPU machine (shared/gpu/README.md brings TE, megatron-core and mlperf-logging to /root/site):
    python3 benchmarks/generate_throughput_7b.py --out $OUT
HF runs in processes without /root/site on PYTHONPATH (TE's cuDNN clashes with transformers' import of it).
`--tiny` runs the same steps on CPU with a 2-layer model (a smoke test of the script). `--shape demo` runs them on
the GPU with the demo base model's shape (config.yaml demo.llama_*, GQA; weights drawn at the demo generator's
init std, so its logits spread as the 7B's do): the issue's parity check "on the demo model". Prints a table last.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the roofline counts the project's own fp8 cache bytes
SHAPES = {"7b": dict(vocab=32000, hidden=4096, ffn=11008, layers=32, heads=32),
          "tiny": dict(vocab=32000, hidden=256, ffn=688, layers=2, heads=4)}
LENGTHS = (719, 898)
NEW_TOKENS = 256
HBM_TB_S = 4.3  # H200 HBM read rate the bound uses
GEMM_TFLOPS = 794.0  # bf16 GEMM ceiling measured on this H200 (shared/gpu/README.md)
PARITY_PROMPTS = 4


def demo_shape() -> dict:
    """The demo base model's shape, from config.yaml, at the demo generator's init std (demo_llama.INIT_STD)."""
    import yaml

    from workflow_scripts.demo.demo_llama import INIT_STD

    demo = yaml.safe_load((ROOT / "config.yaml").read_text())["demo"]
    return dict(vocab=demo["llama_vocab_size"], hidden=demo["llama_hidden_size"], ffn=demo["llama_intermediate_size"],
                layers=demo["llama_num_layers"], heads=demo["llama_num_heads"], kv_heads=demo["llama_num_kv_heads"],
                init_std=INIT_STD)


def make_inputs(work: Path, shape: dict, samples: int, device: str) -> None:
    """The random HF checkpoint, the sample list (tok_input) and a tokenizer.json that knows '</s>' (id 2)."""
    import pandas as pd
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["ffn"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape.get("kv_heads", shape["heads"]), max_position_embeddings=4096,
                         initializer_range=shape.get("init_std", 0.02), torch_dtype="bfloat16")
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(work / "hf", safe_serialization=True)
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(LENGTHS[0], LENGTHS[1] + 1, (samples,), generator=gen)
    prompts = [torch.randint(3, shape["vocab"], (int(n),), generator=gen).tolist() for n in lengths]
    pd.DataFrame({"tok_input": prompts}).to_pickle(work / "samples.pkl")
    Tokenizer(WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>")).save(str(work / "tokenizer.json"))


def hf_whole_batches(samples: int, batch: int) -> int:
    """The prompts one HF batch size runs: whole batches only (at least one), so that no size's rate includes a
    smaller last batch and a size above `samples` is not silently the same run as a smaller one."""
    return max(1, samples // batch) * batch


def hf_generate(work: Path, samples: int, batches: list[int], device: str) -> dict:
    """HF generate at each batch size over the first prompts (left padding; `hf_whole_batches` of `samples`), then
    fp32 first-step logits."""
    import pandas as pd
    import torch
    from transformers import LlamaForCausalLM

    prompts = pd.read_pickle(work / "samples.pkl")["tok_input"].tolist()
    model = LlamaForCausalLM.from_pretrained(work / "hf", torch_dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    result = {}
    for batch in batches:
        need = hf_whole_batches(samples, batch)
        if need > len(prompts):
            result[f"batch_{batch}"] = {"error": f"needs {need} prompts, --samples made {len(prompts)}"}
            continue
        try:
            result[f"batch_{batch}"] = _hf_batches(model, prompts[:need], batch, device)
        except torch.OutOfMemoryError as err:
            result[f"batch_{batch}"] = {"error": f"out of memory: {str(err)[:120]}"}
            torch.cuda.empty_cache()
    del model
    for dtype, name in ((torch.float32, "hf_logits.pt"), (torch.float64, "hf64_logits.pt")):
        torch.save(hf_last_logits(work, prompts[:PARITY_PROMPTS], dtype, device), work / name)
    return result


def hf_last_logits(work: Path, prompts: list[list[int]], dtype, device: str):
    """HF's logits of each prompt's last position, one prompt at a time, in `dtype`: fp32 is the comparison the
    issue names; fp64 (SDPA's math kernel) is near-exact, so it shows how far each fp32 implementation is from the
    true logits, HF's own included."""
    import torch
    from transformers import LlamaForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False  # (torch's default) true fp32 GEMMs
    model = LlamaForCausalLM.from_pretrained(work / "hf", torch_dtype=dtype, attn_implementation="sdpa").to(device)
    with torch.no_grad():
        logits = [model(torch.tensor([p], device=device)).logits[0, -1].double().cpu() for p in prompts]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return torch.stack(logits)


def _hf_batches(model, prompts: list[list[int]], batch: int, device: str) -> dict:
    import torch

    start, tokens = time.perf_counter(), 0
    for i in range(0, len(prompts), batch):
        part = prompts[i:i + batch]
        longest = max(map(len, part))
        ids = torch.tensor([[0] * (longest - len(p)) + p for p in part], device=device)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in part], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, pad_token_id=0,
                             eos_token_id=2, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        tokens += (out.shape[1] - longest) * len(part)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "new_tokens": tokens, "tokens_per_s": tokens / seconds}


def parity(work: Path) -> dict:
    """The fast engine's prefill of the first prompts, batched (left-padded), fp32, against HF's logits; and, for
    scale, megatron's own forward of each prompt (the conversion gate's path) against HF's."""
    import pandas as pd
    import torch
    import yaml

    from workflow_scripts.convert.verify_conversion import compare, load_mcore_model
    from workflow_scripts.inference import decode_engine as D
    from workflow_scripts.inference.static_decode import _forward
    from workflow_scripts.model.llama_model import init_parallel

    init_parallel(1, 1)
    model, cfg = load_mcore_model(work / "mcore")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    prompts = pd.read_pickle(work / "samples.pkl")["tok_input"].tolist()[:PARITY_PROMPTS]
    tokens, pad = D.left_pad(prompts, torch.device(device))
    cache = D.KVCache(model, len(prompts), tokens.shape[1], torch.float32, torch.device(device))
    with torch.no_grad():
        logits = D.prefill(model, tokens, pad, cache, D.RopeTable(model, tokens.shape[1], torch.float32))
        reference = torch.stack([_forward(model, torch.tensor([p], device=device), 0)[0, -1] for p in prompts])
    tolerance = yaml.safe_load((ROOT / "config.yaml").read_text())["convert"]["tolerance"]
    hf, exact = torch.load(work / "hf_logits.pt"), torch.load(work / "hf64_logits.pt")
    fast = logits[:, :cfg.vocab_size].double().cpu()
    forward = reference[:, :cfg.vocab_size].double().cpu()
    result = compare(hf, fast, tolerance)
    result["logit_std"] = float(hf.std())  # the scale the differences are of
    result["megatron_forward_vs_hf"] = compare(hf, forward, tolerance)
    result["vs_hf_fp64"] = {"fast_prefill": compare(exact, fast, tolerance),
                            "megatron_forward": compare(exact, forward, tolerance),
                            "hf_fp32": compare(exact, hf, tolerance)}
    return result


def project(work: Path, out: Path, name: str, extra: list[str], limit: int,
            new_tokens: tuple[int, int] = (NEW_TOKENS, NEW_TOKENS)) -> dict:
    """The generation entry point as rule `generate` runs it (torchrun, one process per GPU) with (max, min) new
    tokens; its stats JSON."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "workflow_scripts.inference.generate", "--tp", "1",
           "--mcore", str(work / "mcore"), "--samples", str(work / "samples.pkl"), "--tokenizer",
           str(work / "tokenizer.json"), "--eos-token", "</s>", "--out", str(out / f"{name}_accuracy.json"),
           "--summary", str(out / f"{name}_summary.txt"), "--detail", str(out / f"{name}_detail.txt"),
           "--stats", str(out / f"{name}.json"), "--max-new-tokens", str(new_tokens[0]), "--min-new-tokens",
           str(new_tokens[1]), "--limit", str(limit), "--threads", "1", *extra]
    start = time.perf_counter()
    proc = _run(cmd, out / f"{name}.log", with_site=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": (out / f"{name}.log").read_text()[-1500:]}
    stats = json.loads((out / f"{name}.json").read_text())
    return {"seconds": stats["seconds"], "new_tokens": stats["generated_tokens"], "tokens_per_s":
            stats["tokens_per_second"], "batch": stats["batch_size"], "kv_cache": stats["kv_cache"],
            "warmup_s": stats.get("warmup_seconds"), "wall_s": wall,
            "command": " ".join(cmd)}


def _run(cmd: list[str], log: Path, with_site: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if with_site:
        env["PYTHONPATH"] = f"{os.environ.get('PYTHONPATH', '')}:{ROOT}"
    else:
        env.pop("PYTHONPATH", None)
    with open(log, "w") as handle:
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def weight_count(shape: dict) -> int:
    """Parameters of the MHA Llama shapes above (embedding and output layer untied; norms left out)."""
    return shape["vocab"] * shape["hidden"] * 2 + shape["layers"] * (
        4 * shape["hidden"] ** 2 + 3 * shape["hidden"] * shape["ffn"])


def roofline_seconds(shape: dict, prompts: list[list[int]], batch: int, fp8: bool = False) -> float:
    """Lower bound of a run at `batch` rows: prefill FLOPs at GEMM_TFLOPS plus, per decode step, the weights and
    the batch's cached keys/values (bf16, or with `fp8` codes and scales) read at HBM_TB_S (batches formed longest
    first, as generate.length_batches)."""
    from workflow_scripts.inference.kv_fp8 import bytes_per_vector

    params = weight_count(shape)
    head_dim = shape["hidden"] // shape["heads"]
    per_vector = bytes_per_vector(head_dim) if fp8 else 2 * head_dim
    kv_per_token = shape["layers"] * 2 * shape["heads"] * per_vector
    lengths = sorted((len(p) for p in prompts), reverse=True)
    seconds = 0.0
    for i in range(0, len(lengths), batch):
        part = lengths[i:i + batch]
        seconds += sum(part) * 2 * params / (GEMM_TFLOPS * 1e12)
        for t in range(NEW_TOKENS - 1):
            seconds += (2 * params + kv_per_token * sum(n + t for n in part)) / (HBM_TB_S * 1e12)
    return seconds


def table(results: dict, shape: dict, prompts: list[list[int]]) -> list[str]:
    params = weight_count(shape)
    step_ms = 2 * params / (HBM_TB_S * 1e12) * 1e3
    hf_best = max((r["tokens_per_s"] for k, r in results.items() if k.startswith("hf_") and "tokens_per_s" in r),
                  default=float("nan"))
    lines = [f"weight-only decode step {step_ms:.2f} ms ({2 * params / 1e9:.1f} GB at {HBM_TB_S} TB/s): bound at batch 64"
             f" = {64 / step_ms * 1e3:,.0f} new tokens/s", "",
             "| run | batch | samples | seconds | warm-up s | new tokens/s | vs HF best | of weight-only bound | "
             "of roofline |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if "tokens_per_s" not in r:
            lines.append(f"| {name} | | | | | failed: {str(r.get('error', ''))[-200:]!r} | | | |")
            continue
        batch = r["batch"]
        samples = r["new_tokens"] // NEW_TOKENS
        bound = batch / step_ms * 1e3
        roof = roofline_seconds(shape, prompts[:samples], batch, r.get("kv_cache") == "fp8") / r["seconds"]
        warm = "" if r.get("warmup_s") is None else f"{r['warmup_s']:.1f}"
        vs_hf = "" if hf_best != hf_best else f"{r['tokens_per_s'] / hf_best:.2f}x"  # nan: no HF run
        lines.append(f"| {name} | {batch} | {samples} | {r['seconds']:.1f} | {warm} | {r['tokens_per_s']:,.0f} | "
                     f"{vs_hf} | {r['tokens_per_s'] / bound:.1%} | {roof:.1%} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/generate7b")))
    p.add_argument("--work", type=Path, default=Path("/tmp/generate7b"), help="checkpoints and prompts (~27 GB)")
    p.add_argument("--samples", type=int, default=512, help="prompts for the project's runs")
    p.add_argument("--hf-samples", type=int, default=128,
                   help="prompts for each HF run, rounded down to whole batches (at least one batch)")
    # 160 runs out of memory on an H200 (HF's cache grows by concatenation), so 128 is HF's best batch there
    p.add_argument("--hf-batches", type=int, nargs="*", default=[64, 128, 160], help="none: only the parity logits")
    p.add_argument("--static-samples", type=int, default=64, help="prompts for the reference path (--engine static)")
    p.add_argument("--runs", nargs="+", default=["project_defaults", "hf", "parity", "project_matmul",
                                                 "project_torch_rope", "project_eager", "project_sdpa",
                                                 "project_fast_batch64", "project_static_batch64"],
                   help="steps to run, in this order")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: 2-layer model (or --shape), few samples")
    p.add_argument("--shape", choices=["7b", "demo"], default="7b", help="demo: the demo base model's shape (GPU)")
    p.add_argument("--step", choices=["inputs", "hf", "parity"], help=argparse.SUPPRESS)
    a = p.parse_args()
    shape = demo_shape() if a.shape == "demo" else SHAPES["tiny" if a.tiny else "7b"]
    device = "cpu" if a.tiny else "cuda"
    if a.step == "inputs":
        return make_inputs(a.work, shape, a.samples, device)
    if a.step == "hf":
        return print(json.dumps(hf_generate(a.work, a.hf_samples, a.hf_batches, device)))
    if a.step == "parity":
        return print(json.dumps(parity(a.work)))
    run_all(a, shape)


def prepare(work: Path, out: Path, samples: int, tiny: bool, shape: str) -> None:
    """The random HF checkpoint, prompts and tokenizer (in a process without TE), and their megatron-core conversion
    by the project's converter; each kept when already in `work`."""
    if not (work / "samples.pkl").exists():
        _run([sys.executable, __file__, "--work", str(work), "--samples", str(samples), "--step", "inputs",
              "--shape", shape] + (["--tiny"] if tiny else []), out / "inputs.log", with_site=False)
    if not (work / "mcore").exists():
        _run([sys.executable, "-m", "workflow_scripts.convert", "hf-to-mcore", "--hf", str(work / "hf"), "--out",
              str(work / "mcore"), "--tp", "1", "--pp", "1", "--spec", "local" if tiny else "te",
              "--make-vocab-size-divisible-by", "128", "--threads", "2"], out / "convert.log", with_site=True)


def run_all(a: argparse.Namespace, shape: dict) -> None:
    """Every step in order; a step whose result is already in --work (a call cut off by its time limit) is kept."""
    import pandas as pd

    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    done_file = a.work / "results.json"
    report = json.loads(done_file.read_text()) if done_file.exists() else {"runs": {}}
    me = [sys.executable, __file__, "--work", str(a.work), "--samples", str(a.samples), "--hf-samples",
          str(a.hf_samples), "--hf-batches", *map(str, a.hf_batches), "--shape", a.shape] + (["--tiny"] if a.tiny else [])
    prepare(a.work, a.out, a.samples, a.tiny, a.shape)
    runs = {"project_defaults": (["--batch-size", "auto"], a.samples),
            "hf": None,
            "parity": None,
            "project_fp8": (["--batch-size", "auto", "--kv-cache", "fp8"], a.samples),
            "project_eager": (["--batch-size", "auto", "--cuda-graphs", "off"], a.samples),
            "project_sdpa": (["--batch-size", "auto", "--decode-attention", "sdpa"], a.samples),
            "project_matmul": (["--batch-size", "auto", "--decode-attention", "matmul"], a.samples),
            "project_torch_rope": (["--batch-size", "auto", "--rope", "torch"], a.samples),
            "project_module_swiglu": (["--batch-size", "auto", "--swiglu", "module"], a.samples),
            "project_batch_176": (["--batch-size", "176"], a.samples),  # a fixed batch near auto's 180 (3 batches of 512)
            "project_fast_batch64": (["--batch-size", "64"], a.samples // 2),
            "project_static_batch64": (["--batch-size", "64", "--engine", "static"], a.static_samples)}
    for name in a.runs:
        if name in report["runs"] or name in report or (name == "hf" and any(k.startswith("hf_") for k in report["runs"])):
            continue
        if name == "parity":
            report["parity"] = _parity(me, a.out)
        else:
            report["runs"].update(_hf(me, a.out) if name == "hf" else {name: project(a.work, a.out, name, *runs[name])})
        done_file.write_text(json.dumps(report, indent=2))
        (a.out / "generate_throughput_7b.json").write_text(json.dumps(report, indent=2))  # kept if the call is cut
    report.setdefault("parity", {"error": "not run"})
    (a.out / "generate_throughput_7b.json").write_text(json.dumps(report, indent=2))
    prompts = pd.read_pickle(a.work / "samples.pkl")["tok_input"].tolist()
    print("command: python3 benchmarks/generate_throughput_7b.py --out $OUT" + (" --tiny" if a.tiny else "")
          + (f" --shape {a.shape}" if a.shape != "7b" else ""))
    keys = ("max_abs_diff", "tolerance", "passed", "argmax_agreement", "logit_std", "error")
    print(f"first-step logits vs HF (fp32): {json.dumps({k: report['parity'].get(k) for k in keys})}")
    forward = report["parity"].get("megatron_forward_vs_hf", {})
    print(f"megatron's own forward vs HF (fp32): {json.dumps({k: forward.get(k) for k in keys})}")
    for name, r in report["parity"].get("vs_hf_fp64", {}).items():
        print(f"{name} (fp32) vs HF in fp64: {json.dumps({k: r.get(k) for k in keys})}")
    for other in ("project_fp8", "project_matmul", "project_torch_rope", "project_module_swiglu", "project_sdpa",
                  "project_eager"):
        if "error" not in report["runs"].get(other, {"error": 1}) and "error" not in report["runs"].get(
                "project_defaults", {"error": 1}):
            print(f"greedy tokens, project_defaults vs {other}: {json.dumps(token_agreement(a.out, other))}")
    print("\n".join(table(report["runs"], shape, prompts)))


def token_agreement(out: Path, other: str) -> dict:
    """How many samples the defaults and `other` generate identically (bf16: a different kernel's rounding may flip
    a near-tie of random weights' logits), and the mean index of the first different token where they differ."""
    def tokens(name: str) -> dict[int, str]:
        return {r["qsl_idx"]: r["data"] for r in json.loads((out / f"{name}_accuracy.json").read_text())}

    mine, theirs = tokens("project_defaults"), tokens(other)
    firsts = [next(i for i, (x, y) in enumerate(zip(mine[k], theirs[k])) if x != y) // 8
              for k in mine if mine[k] != theirs.get(k)]  # hex of int32 tokens: 8 characters a token
    return {"samples": len(mine), "identical": len(mine) - len(firsts),
            "mean_first_difference": round(sum(firsts) / len(firsts), 1) if firsts else None}


def _hf(me: list[str], out: Path) -> dict:
    proc = _run(me + ["--step", "hf"], out / "hf.log", with_site=False)
    if proc.returncode != 0:
        return {"hf_generate": {"error": (out / "hf.log").read_text()[-1500:]}}
    last = _last_json(out / "hf.log")
    return {f"hf_generate_{key}": {**r, "batch": int(key.split("_")[1])} for key, r in last.items()}


def _last_json(log: Path) -> dict:
    """The step's result: its last line that is a JSON object (torch may print warnings after it)."""
    return json.loads(next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{")))


def _parity(me: list[str], out: Path) -> dict:
    saved = os.environ.get("NVIDIA_TF32_OVERRIDE")
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"  # fp32 logits compared at the conversion's tolerance
    try:
        proc = _run(me + ["--step", "parity"], out / "parity.log", with_site=True)
    finally:
        os.environ.pop("NVIDIA_TF32_OVERRIDE") if saved is None else os.environ.update(NVIDIA_TF32_OVERRIDE=saved)
    if proc.returncode != 0:
        return {"error": (out / "parity.log").read_text()[-1500:]}
    return _last_json(out / "parity.log")


if __name__ == "__main__":
    main()
