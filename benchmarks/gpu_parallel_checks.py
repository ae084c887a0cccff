"""GPU runs of the trainer and generation on the demo artifacts: parallel layouts against one GPU, side by side.

Runs, on a machine with >= 2 GPUs (see shared/gpu/README.md for the kit), each through the same entry points the rules
use (`torchrun ... -m workflow_scripts.train` / `-m workflow_scripts.inference.generate`):
  LoRA (demo model, TE spec, fp32 so layouts compare to ~1e-5): 1 GPU with megatron DDP + optimizer; the same with
  torch AdamW (the CPU path, as a peer); DP 2 with the distributed optimizer; DP 2 killed after step 3 and resumed;
  TP 2; PP 2. Pretraining (random init, bf16, TE) and SFT (bf16, TE) on 1 GPU. Generation on 1 GPU, DP 2 and TP 2.
    PYTHONPATH=/root/site:. python3 benchmarks/gpu_parallel_checks.py --demo DEMO_RESULTS_DIR --out $OUT
DEMO_RESULTS_DIR is a demo run's `results/` folder (convert/, govreport/, c4/tokenized/, ultrachat/, openorca/).
Prints a table last; logs and outputs go to --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Test seams (the kill switch below): Python starts them from this folder's sitecustomize.py (which then runs the next
# one on the path, e.g. /root/site's), so a run that sets a PIPELINE_TEST_ variable gets it first on PYTHONPATH.
SEAMS = ROOT / "tests" / "helpers" / "seams"
PORT = [29610]
CPU_SETS: dict[str, str] = {}  # --cpu: settings swapped for the CPU dry run


def launch(nproc: int, module: str, args: list[str], log: Path, env: dict | None = None, timeout: int = 300) -> int:
    PORT[0] += 1
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={PORT[0]}",
           "-m", module, *args]
    seams = f"{SEAMS}:" if any(name.startswith("PIPELINE_TEST_") for name in env or {}) else ""
    run_env = dict(os.environ, PYTHONPATH=f"{seams}{os.environ.get('PYTHONPATH', '')}:{ROOT}", NVIDIA_TF32_OVERRIDE="0",
                   **(env or {}))
    with open(log, "a") as handle:
        handle.write(" ".join(cmd) + "\n")
        handle.flush()
        try:
            return subprocess.run(cmd, cwd=ROOT, env=run_env, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return 124


def launch_two_nodes(module: str, args: list[str], log: Path, timeout: int = 300) -> int:
    """Two torchrun 'nodes' on this host, one GPU each, meeting through c10d rendezvous with the flags of
    workflow_scripts/dag/train_jobs.py's multi-node launcher (there `srun` starts one per node)."""
    PORT[0] += 1
    procs = []
    with open(log, "a") as handle:
        for node in range(2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{PORT[0]}", "--rdzv-id", "gpucheck",
                   "-m", module, *args]
            env = dict(os.environ, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}", NVIDIA_TF32_OVERRIDE="0",
                       CUDA_VISIBLE_DEVICES=str(node))
            handle.write(" ".join(cmd) + "\n")
            handle.flush()
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT))
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(124)
    return max(codes)


def steps(run: Path) -> list[dict]:
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(run / "steps.csv"))]


def train(name: str, recipe: str, sets: list[str], out: Path, nproc: int = 1, env: dict | None = None,
          resume_from_kill: bool = False, two_nodes: bool = False) -> dict:
    run, ckpt, log = out / name, out / f"{name}_ckpt", out / f"{name}.log"
    sets = [CPU_SETS.get(s, s) for s in sets]
    args = ["--recipe", recipe, "--out", str(run), "--ckpt-dir", str(ckpt), "--set", *sets]
    start = time.time()
    note = ""
    if resume_from_kill:
        code = launch(nproc, "workflow_scripts.train", args, log, env={"PIPELINE_TEST_KILL_AT_STEP": "3"})
        note = f"killed run exit {code}; "
    if two_nodes:
        code = launch_two_nodes("workflow_scripts.train", args, log)
    else:
        code = launch(nproc, "workflow_scripts.train", args, log, env=env)
    result = {"check": name, "gpus": nproc, "exit": code, "wall_s": round(time.time() - start, 1)}
    if code != 0:
        return {**result, "note": note + log.read_text()[-800:].replace("\n", " | ")}
    rows = steps(run)
    metrics = json.loads((run / "metrics.json").read_text())
    if resume_from_kill:
        note += "resumed" if "resumed from" in log.read_text() else "NOT resumed"
    return {**result, "steps": len(rows), "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"],
            "tokens_per_s": sorted(r["tokens_per_s"] for r in rows[1:] or rows)[len(rows[1:] or rows) // 2],
            "final_quality": metrics.get("final_quality"), "losses": [r["loss"] for r in rows], "note": note}


def compare(result: dict, reference: dict) -> None:
    if "losses" in result and "losses" in reference:
        result["max_dloss_vs_1gpu"] = max(abs(a - b) for a, b in zip(result["losses"], reference["losses"]))


def generate(name: str, demo: Path, out: Path, nproc: int, tp: int) -> dict:
    acc = out / f"{name}.json"
    args = ["--mcore", str(demo / "convert" / "llama_mcore"), "--samples", str(next((demo / "openorca").glob("*sampled_*.pkl"))),
            "--tokenizer", str(demo / "demo" / "tokenizer" / "tokenizer.json"), "--eos-token", "</s>", "--out", str(acc),
            "--stats", str(out / f"{name}_stats.json"), "--max-new-tokens", "32", "--min-new-tokens", "1",
            "--batch-size", "8", "--limit", "40", "--tp", str(tp), "--threads", "0"]
    start = time.time()
    code = launch(nproc, "workflow_scripts.inference.generate", args, out / f"{name}.log")
    result = {"check": name, "gpus": nproc, "exit": code, "wall_s": round(time.time() - start, 1)}
    if code == 0:
        result["tokens"] = {e["qsl_idx"]: e["data"] for e in json.loads(acc.read_text())}
        result["note"] = json.loads((out / f"{name}_stats.json").read_text()).get("tokens_per_s", "")
    else:
        result["note"] = (out / f"{name}.log").read_text()[-800:].replace("\n", " | ")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--cpu", action="store_true", help="dry run of this script on CPU (local spec, fp32, gloo)")
    args = parser.parse_args()
    if args.cpu:
        CPU_SETS.update({"spec=te": "spec=local", "precision=bf16": "precision=fp32"})
    demo, out = args.demo.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    want = (lambda n: not args.only or any(n.startswith(o) for o in args.only))  # noqa: E731
    results: list[dict] = []

    lora = [f"checkpoint={demo / 'convert' / 'llama_mcore'}", f"train_data=[{demo / 'govreport' / 'train.npy'}]",
            f"validation_data={demo / 'govreport' / 'validation.npy'}", "spec=te", "precision=fp32", "max_steps=6",
            "eval_every_samples=16", "eval_skip=0", "eval_samples=32", "target=0.0", "checkpoint_every_steps=2",
            "lora={rank: 16, alpha: 32, dropout: 0.0, targets: [linear_qkv, linear_proj, linear_fc1, linear_fc2]}"]
    reference = None
    for name, nproc, extra, kill in (("lora_1gpu_megatron", 1, [], False), ("lora_1gpu_torch_adamw", 1, ["optimizer_impl=torch"], False),
                                     ("lora_dp2_distopt", 2, [], False), ("lora_dp2_distopt_resumed", 2, [], True),
                                     ("lora_tp2", 2, ["tensor_parallel=2"], False), ("lora_pp2", 2, ["pipeline_parallel=2"], False)):
        if not want(name):
            continue
        result = train(name, "demo_lora_cpu", [*lora, *extra], out, nproc=nproc, resume_from_kill=kill)
        reference = reference or (result if name == "lora_1gpu_megatron" and "losses" in result else None)
        if reference is not None and result is not reference:
            compare(result, reference)
        results.append(result)
    if want("lora_2nodes"):
        result = train("lora_2nodes_c10d", "demo_lora_cpu", lora, out, nproc=2, two_nodes=True)
        if reference is not None:
            compare(result, reference)
        results.append(result)

    tokenized = demo / "c4" / "tokenized"
    if want("pretrain"):
        prefixes = [str(tokenized / f"c4-train.en_{k}_text_document") for k in (6, 7)]
        val = str(next(tokenized.glob("c4-validation-*_text_document.idx"))).removesuffix(".idx")
        sets = [f"train_data=[{prefixes[0]}, {prefixes[1]}]", "train_weights=[50, 50]", f"validation_data={val}",
                f"index_cache={out / 'index_cache'}", "spec=te", "precision=bf16", "max_steps=40"]
        launch(1, "workflow_scripts.train.build_index_cache", ["--recipe", "demo_pretrain_cpu", "--done",
                                                         str(out / "index_cache.json"), "--set", *sets], out / "index.log")
        results.append(train("pretrain_1gpu_bf16", "demo_pretrain_cpu", sets, out))
    if want("sft"):
        ultra = demo / "ultrachat"
        sets = [f"checkpoint={demo / 'convert' / 'llama_mcore'}", f"train_data=[{ultra / 'train.parquet'}]",
                f"validation_data={ultra / 'test.parquet'}", f"vocab_from_tokenizer={ultra / 'tokenizer' / 'tokenizer.json'}",
                "spec=te", "precision=bf16", "max_steps=10"]
        results.append(train("sft_1gpu_bf16", "demo_sft_cpu", sets, out))
    if want("generate"):
        one = generate("generate_1gpu", demo, out, 1, 1)
        results.append(one)
        for name, nproc, tp in (("generate_dp2", 2, 1), ("generate_tp2", 2, 2)):
            r = generate(name, demo, out, nproc, tp)
            if "tokens" in r and "tokens" in one:
                same = sum(r["tokens"].get(k) == v for k, v in one["tokens"].items())
                r["note"] = f"{same}/{len(one['tokens'])} samples identical to 1 GPU; tok/s {r['note']}"
            results.append(r)

    (out / "results.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "tokens"} for r in results],
                                                 indent=1))
    print("\n| check | GPUs | exit | steps | first loss | last loss | max dloss vs 1 GPU | tokens/s | wall s | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        def f(key, fmt="{:.6f}"):
            return fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else "-"
        print(f"| {r['check']} | {r['gpus']} | {r['exit']} | {r.get('steps', '-')} | {f('loss_first')} | {f('loss_last')} "
              f"| {f('max_dloss_vs_1gpu', '{:.2e}')} | {f('tokens_per_s', '{:.0f}')} | {r['wall_s']} | {str(r.get('note', ''))[:300]} |")
    print(f"\ncommand: PYTHONPATH=/root/site:. python3 benchmarks/gpu_parallel_checks.py --demo {args.demo} --out OUT")


if __name__ == "__main__":
    main()
