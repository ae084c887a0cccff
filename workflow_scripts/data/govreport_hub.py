"""Export one split of an HF hub dataset to a local parquet, for users who name a dataset id instead of files.

Raw rows: `--dataset tau/scrolls --name gov_report` (columns input, output); packed rows:
`--dataset regisss/scrolls_gov_report_preprocessed_mlperf_2 --revision 21ff1233ee3e87bc780ab719c755170148aba1cb`
(columns input_ids, labels). Needs network access (or a filled HF cache); the demo and the tests never call it.

CLI: python -m workflow_scripts.data.govreport_hub --dataset ID --name CONFIG --revision REV --split train
        --output F.parquet --num-proc N   (--name '' / --revision '': none)
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from workflow_scripts.core.atomic import temp_sibling
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError

log = logging.getLogger("govreport_hub")


def export_split(dataset: str, name: str | None, revision: str | None, split: str, output: Path, num_proc: int) -> int:
    import os

    import datasets

    try:
        data = datasets.load_dataset(dataset, name or None, split=split, revision=revision or None, num_proc=num_proc)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise PipelineInputError(f"govreport.hub_dataset: cannot load {dataset!r} split {split!r} ({err})") from err
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(output)
    try:
        data.to_parquet(str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("%s[%s] split %s: %d rows -> %s", dataset, name, split, len(data), output)
    return len(data)


def _body(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-proc", type=int, required=True)
    args = parser.parse_args(argv)
    export_split(args.dataset, args.name, args.revision, args.split, args.output, max(1, args.num_proc))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
