"""Run under `torchrun --nproc-per-node 2` (gloo) by tests/test_convert_tp2.py; rank 0 writes a JSON report.

    convert_tp2_driver.py REPORT RESAVE_DIR NAME=HF:MCORE ...

1. TP 2: every converted checkpoint loads and matches the HF logits.
2. TP 2: megatron itself re-saves the first one (its own writer, TP-sharded chunks; exercises the CPU save patches).
3. PP 2: each pipeline stage loads its layers of the first checkpoint.
"""
from __future__ import annotations

import faulthandler
import json
import signal
import shutil
import sys
import warnings
from pathlib import Path

import torch


def main() -> None:
    warnings.filterwarnings("ignore")
    faulthandler.register(signal.SIGUSR1)  # a hung run can be asked where it waits
    from megatron.core import dist_checkpointing, parallel_state

    from workflow_scripts.convert import mcore_layout as L
    from workflow_scripts.convert.conversion import MODEL_CONFIG
    from workflow_scripts.model.llama_model import init_parallel, shutdown_parallel
    from workflow_scripts.convert.mcore_checkpoint import McoreReader
    from workflow_scripts.convert.verify_conversion import load_mcore_model, verify

    report_path, resave = Path(sys.argv[1]), Path(sys.argv[2])
    pairs = [arg.split("=", 1) for arg in sys.argv[3:]]
    pairs = [(name, *paths.split(":")) for name, paths in pairs]
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else None
    report: dict = {"tp2": {}}

    for name, hf, mcore in pairs:
        result = verify(hf, mcore, tolerance=1e-4, tp=2, seq_len=16)
        report["tp2"][name] = {k: result[k] for k in ("max_abs_diff", "argmax_agreement", "passed")}

    _, hf, mcore = pairs[0]
    model, _ = load_mcore_model(mcore)
    rank = torch.distributed.get_rank()
    if rank == 0:
        resave.mkdir(parents=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model.sharded_state_dict(), str(resave))
    if rank == 0:
        shutil.copy(Path(mcore) / MODEL_CONFIG, resave / MODEL_CONFIG)
    torch.distributed.barrier()

    init_parallel(1, 2)
    model, cfg = load_mcore_model(mcore)
    reader = McoreReader(mcore)
    offset = parallel_state.get_pipeline_model_parallel_rank() * (cfg.num_layers // 2)
    stage_ok = all(
        torch.equal(layer.self_attention.linear_qkv.weight, reader.read(L.QKV, offset + i))
        and torch.equal(layer.mlp.linear_fc2.weight, reader.read(L.FC2, offset + i))
        for i, layer in enumerate(model.decoder.layers)
    )
    flags = [None, None]
    torch.distributed.all_gather_object(flags, (stage_ok, len(model.decoder.layers), model.pre_process, model.post_process))
    report["pp2_stages"] = flags
    if rank == 0:
        report_path.write_text(json.dumps(report))
    shutdown_parallel()


if __name__ == "__main__":
    main()
