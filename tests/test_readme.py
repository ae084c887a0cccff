"""The README's promises: two commands for a fresh machine, CI runs the test one, the DAG picture is current."""
from __future__ import annotations

import re

from conftest import run_snakemake


def _readme_commands(readme: str) -> list[str]:
    section = readme.split("## Fresh machine: two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def _make_recipe(makefile: str, target: str) -> list[str]:
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert match, f"Makefile has no target {target!r}"
    return [line.strip() for line in match.group(1).splitlines()]


def test_two_fresh_machine_commands(repo):
    """README, Makefile and .ci/run agree: CI runs exactly the README's two commands, demo first."""
    assert _readme_commands((repo / "README.md").read_text()) == ["make demo", "make test"]
    ci = [line.strip() for line in (repo / ".ci/run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert [line for line in ci if line.startswith("make ")] == ["make demo", "make test"]
    makefile = (repo / "Makefile").read_text()
    # .venv's programs by path: the commands work with the machine's own python first on PATH, nothing activated
    assert _make_recipe(makefile, "demo") == ["$(VENV)/bin/snakemake --cores all"]
    assert _make_recipe(makefile, "test") == ["$(PYTEST)"]
    assert _make_recipe(makefile, "test-fast") == ['$(PYTEST) -m "not slow"']
    assert re.search(r"^PYTEST\s*:=\s*\$\(VENV\)/bin/pytest$", makefile, flags=re.M)


def test_readme_says_when_to_run_the_fast_tier(repo):
    readme = (repo / "README.md").read_text()
    assert "make test-fast" in readme


def test_rulegraph_picture_is_current(repo):
    """Every rule of the default DAG (the demo) is in the committed picture."""
    dot = run_snakemake(repo, "--rulegraph").stdout
    rules = sorted(set(re.findall(r'label = "([A-Za-z0-9_]+)"', dot)))
    assert len(rules) > 20
    svg = (repo / "docs/rulegraph.svg").read_text()
    missing = [r for r in rules if f">{r}</text>" not in svg]
    assert not missing, f"docs/rulegraph.svg is stale (regenerate as the README says); missing {missing}"
