"""Jobs run with the Python environment of the Snakemake that runs them, whatever `python` comes first on PATH."""
from __future__ import annotations

import os
import subprocess

from conftest import SNAKEMAKE, copy_workflow

from workflow_scripts.core.runtime import export_interpreter_path


def test_interpreter_folder_goes_first_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    export_interpreter_path("/opt/envs/pipeline/bin/python")
    assert os.environ["PATH"].split(os.pathsep) == ["/opt/envs/pipeline/bin", "/usr/bin", "/bin"]
    export_interpreter_path("/opt/envs/pipeline/bin/python")  # idempotent: the Snakefile is parsed once per job too
    assert os.environ["PATH"].split(os.pathsep) == ["/opt/envs/pipeline/bin", "/usr/bin", "/bin"]


def test_rule_runs_with_snakemakes_environment_not_the_first_python_on_path(tmp_path):
    """The newcomer's failure: the machine's own python first on PATH (no pyarrow there), .venv not activated.
    A bare-bones `python` shim stands first on PATH and would fail any job that reached it."""
    workdir = copy_workflow(tmp_path / "wf")
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("python", "python3", "torchrun"):
        shim = shims / name
        shim.write_text("#!/bin/sh\necho 'wrong interpreter: the machine python' >&2\nexit 97\n")
        shim.chmod(0o755)
    env = {"PATH": f"{shims}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)}
    target = "results/demo/openorca/1M-GPT4-Augmented.parquet"  # rule demo_openorca_parquet needs pyarrow
    proc = subprocess.run([SNAKEMAKE, "--cores", "1", target], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (workdir / target).is_file()
