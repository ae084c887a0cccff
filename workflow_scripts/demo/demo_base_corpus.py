"""Training text of the demo base model: packed demo GovReport train rows plus chat rows drawn like the demo
OpenOrca ones (another seed), in the exact token layout the accuracy run feeds the model.

A real base model (Llama 2 70B chat) already answers OpenOrca prompts; the demo's tiny model must learn to, or its
generations are noise and ROUGE is 0. Each chat example is tok_input (BOS, the Llama 2 prompt, the response init
token: as openorca_filter builds it) + the response tokens + EOS. Only part of the GovReport rows are used, so that
the base model stays above the LoRA target on GovReport and the LoRA run has something to learn. Examples are packed whole, greedily, into rows of
seq_length tokens; the unused tail of a row is EOS with loss mask 0. Every other token counts (language modelling).

CLI: python -m workflow_scripts.demo.demo_base_corpus --govreport train.npy --tokenizer tokenizer.json --out base.npy
        --stats base.stats.json --govreport-rows 900 --rows-per-origin 100 --seed 1235 --bos-token "<s>"
        --eos-token "</s>" --response-init-token Ġ
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from workflow_scripts.core.atomic import atomic_open, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.demo.demo_openorca import ordinary_rows
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.data.openorca_rules import llama_prompt
from workflow_scripts.data.openorca_tokens import OrcaTokenizer
from workflow_scripts.data.tokenizer_files import special_token_id

log = logging.getLogger("demo_base_corpus")


def chat_examples(tokenizer: OrcaTokenizer, eos_id: int, rows_per_origin: int, seed: int) -> list[list[int]]:
    rows = ordinary_rows(rows_per_origin, seed)
    inputs = tokenizer.encode_inputs([llama_prompt(r["system_prompt"], r["question"]) for r in rows])
    outputs = tokenizer.encode_outputs([r["response"] for r in rows])
    return [tok_in + tok_out[1:] + [eos_id] for tok_in, tok_out in zip(inputs, outputs)]  # tok_out[0] is its BOS


def pack_whole(examples: list[list[int]], seq_length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy packing of whole examples into [rows, seq_length] ids and a 0/1 mask (0 on the padding)."""
    rows: list[list[int]] = [[]]
    for example in examples:
        if len(example) > seq_length:
            raise PipelineInputError(f"demo chat example of {len(example)} tokens exceeds seq_length {seq_length}")
        if len(rows[-1]) + len(example) > seq_length:
            rows.append([])
        rows[-1].extend(example)
    ids = np.full((len(rows), seq_length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), seq_length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def build(govreport: Path, tokenizer_path: Path, out: Path, stats_path: Path, *, govreport_rows: int,
          rows_per_origin: int, seed: int, bos_token: str, eos_token: str, response_init_token: str) -> dict:
    base = np.load(govreport, allow_pickle=True)
    if not len(base):
        raise PipelineInputError(f"{govreport}: no rows")
    base = base[: govreport_rows or len(base)]
    seq_length = len(base[0]["input_ids"])
    tokenizer = OrcaTokenizer(tokenizer_path, bos_token, response_init_token)
    eos_id = special_token_id(tokenizer.tokenizer, eos_token, "eos token of the demo chat examples")
    examples = chat_examples(tokenizer, eos_id, rows_per_origin, seed)
    ids, mask = pack_whole(examples, seq_length, eos_id)
    chat = [{"input_ids": i, "loss_mask": m.tolist(), "seq_start_id": [0]} for i, m in zip(ids, mask)]
    array = np.empty(len(base) + len(chat), dtype=object)
    array[:] = list(base) + chat
    with atomic_open(out, "wb") as handle:
        np.save(handle, array, allow_pickle=True)
    stats = {"govreport_rows": len(base), "chat_examples": len(examples), "chat_rows": len(chat),
             "chat_tokens": int(mask.sum()), "seq_length": seq_length, "seed": seed}
    write_json(stats_path, stats)
    return stats


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--govreport", type=Path, required=True, help="packed GovReport train.npy")
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--govreport-rows", type=int, required=True, help="the first N GovReport rows only (0: all)")
    parser.add_argument("--rows-per-origin", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--bos-token", required=True)
    parser.add_argument("--eos-token", required=True)
    parser.add_argument("--response-init-token", required=True)
    args = parser.parse_args(argv)
    stats = build(args.govreport, args.tokenizer, args.out, args.stats, govreport_rows=args.govreport_rows,
                  rows_per_origin=args.rows_per_origin,
                  seed=args.seed, bos_token=args.bos_token, eos_token=args.eos_token,
                  response_init_token=args.response_init_token)
    log.info("wrote %s: %s", args.out, stats)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
