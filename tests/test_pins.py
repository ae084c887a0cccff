"""Dependencies are pinned in pyproject.toml; every conda env repeats exactly those pins."""
from __future__ import annotations

import re
import tomllib

import yaml


def _pins(requirements):
    pins = {}
    for req in requirements:
        name, _, version = req.split("#")[0].strip().partition("==")
        assert version, f"unpinned requirement {req!r}"
        pins[name.lower()] = version
    return pins


def test_conda_envs_agree_with_pyproject(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pins = _pins(project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra])
    envs = sorted((repo / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        for name, version in _pins(pip).items():
            assert pins.get(name) == version, f"{env.name}: {name}=={version} but pyproject pins {pins.get(name)}"


def test_every_rule_that_runs_something_has_log_and_conda_env(repo):
    checked = 0
    for smk in (repo / "rules").glob("*.smk"):
        for rule in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            name = rule.split(":")[0]
            if not re.search(r"^    (shell|run|script):", rule, flags=re.M):
                continue  # a target-only rule (input: only), like c4_data
            checked += 1
            assert "    log:" in rule and "    conda:" in rule, f"{smk.name}: {name} lacks log: or conda:"
    assert checked >= 5
