"""MLPerf reference convergence points, read from the installed mlperf-logging's RCP files (the package checker's
own data): the mean of the reference runs' samples to converge for a benchmark at a global batch size (the plain
mean, as the RCP tables of the rules state it; the checker's pass bound derives from an olympic mean of the same)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import mlperf_logging.rcp_checker as _rcp_checker

RCP_ROOT = Path(_rcp_checker.__file__).parent


def _rulesets() -> list[str]:
    """training_X.Y.Z folders, newest first."""
    names = [p.name.removeprefix("training_") for p in RCP_ROOT.glob("training_*") if p.is_dir()]
    return sorted(names, key=lambda v: tuple(int(part) for part in v.split(".")), reverse=True)


@functools.lru_cache(maxsize=None)
def rcp_table(benchmark: str) -> dict[int, float]:
    """{global batch size: RCP mean samples} from the newest ruleset that has the benchmark ({} where none has)."""
    for ruleset in _rulesets():
        path = RCP_ROOT / f"training_{ruleset}" / f"rcps_{benchmark}.json"
        if path.is_file():
            table = {}
            for record in json.loads(path.read_text()).values():
                runs = record.get("Epochs to converge") or record["samples to converge"]
                table[int(record["BS"])] = sum(runs) / len(runs)
            return table
    return {}


def rcp_mean_samples(benchmark: str, global_batch_size: int) -> float | None:
    return rcp_table(benchmark).get(global_batch_size)
