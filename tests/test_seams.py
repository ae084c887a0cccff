"""Test seams live on the test side (tests/helpers/seams): the product holds none, and the seams work from there."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from seams import FAIL_MODULE_ENV, seam_env

PRODUCT = ["workflow_scripts", "rules", "Snakefile", "config.yaml", "schemas"]
SEAM_VARIABLE = "PIPELINE_TEST_"
# a `testing` config key: a YAML key, or a quoted name that code looks up (config["testing"], .get("testing"))
TESTING_KEY = re.compile(r"""^\s*testing\s*:|["']testing["']""", re.M)


def _product_files(repo):
    for name in PRODUCT:
        path = repo / name
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.is_file() and file.suffix in ("", ".py", ".smk", ".yaml", ".yml", ".json"):
                yield file


def test_product_holds_no_test_seams(repo):
    files = list(_product_files(repo))
    assert len(files) > 50 and repo / "Snakefile" in files
    found = []
    for file in files:
        text = file.read_text(errors="replace")
        hits = ([SEAM_VARIABLE] if SEAM_VARIABLE in text else []) + [m.strip() for m in TESTING_KEY.findall(text)]
        found += [f"{file.relative_to(repo)}: {hit}" for hit in hits]
    assert not found, f"test seams in the product: {found}"


def test_fail_module_seam_fails_the_named_module_only(repo, tmp_path):
    """Started from sitecustomize: `python -m workflow_scripts...<module>` exits 1 before the module runs."""
    env = seam_env(os.environ, repo, **{FAIL_MODULE_ENV: "demo_tokenizer"})
    failed = subprocess.run([sys.executable, "-m", "workflow_scripts.demo.demo_tokenizer", "--help"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip() == f"error: failure injected by {FAIL_MODULE_ENV}=demo_tokenizer"
    other = subprocess.run([sys.executable, "-m", "workflow_scripts.demo.demo_c4_corpus", "--help"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
