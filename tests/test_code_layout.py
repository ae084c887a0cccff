"""The code's house rules (issue "one house with rooms by stage"): stage subpackages with small modules and
functions, one layout module behind one rules/common.smk, rule files holding rules only."""
from __future__ import annotations

import ast
import re

PACKAGES = {"core", "data", "demo", "model", "convert", "train", "inference", "scoring", "report", "plan", "dag"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_workflow_scripts_is_stage_subpackages_around_a_small_core(repo):
    root = repo / "workflow_scripts"
    assert [p.name for p in root.glob("*.py")] == ["__init__.py"]
    assert {p.name for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"} == PACKAGES
    for package in PACKAGES:
        assert (root / package / "__init__.py").is_file(), package


def test_modules_and_functions_are_small(repo):
    too_long = []
    for path in sorted((repo / "workflow_scripts").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(repo)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(repo)}:{node.name}: {length} lines")
    assert not too_long


def test_rule_files_hold_rules_only_behind_one_common_file(repo):
    rules = repo / "rules"
    assert not list(rules.glob("*_common.smk"))
    for path in sorted(rules.glob("*.smk")):
        if path.name == "common.smk":
            continue
        text = path.read_text()
        assert not re.search(r"^def |^[A-Z_]+ *=|globals\(\)", text, flags=re.M), f"{path.name} holds more than rules"
    includes = re.findall(r'^include: "rules/(\w+)\.smk"', (repo / "Snakefile").read_text(), flags=re.M)
    assert includes[0] == "common" and len(includes) == len(set(includes)) == len(list(rules.glob("*.smk")))


def test_one_training_rule_definition_makes_every_training_rule(repo):
    text = (repo / "rules/train.smk").read_text()
    assert text.count("-m workflow_scripts.train --recipe") == 1
    assert not re.search(r"^rule train_", text, flags=re.M)
