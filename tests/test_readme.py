"""The README's promises: two commands for a fresh machine, CI runs the test one, the DAG picture is current."""
from __future__ import annotations

import re

from conftest import run_snakemake


def test_two_fresh_machine_commands(repo):
    readme = (repo / "README.md").read_text()
    section = readme.split("## Fresh machine: two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    makefile = (repo / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t.*snakemake --cores all", makefile, flags=re.M)
    assert re.search(r"^test: .*\n\t.*pytest", makefile, flags=re.M)
    assert "make test" in (repo / ".ci/run").read_text()


def test_rulegraph_picture_is_current(repo):
    """Every rule of the default DAG (the demo) is in the committed picture."""
    dot = run_snakemake(repo, "--rulegraph").stdout
    rules = sorted(set(re.findall(r'label = "([A-Za-z0-9_]+)"', dot)))
    assert len(rules) > 20
    svg = (repo / "docs/rulegraph.svg").read_text()
    missing = [r for r in rules if f">{r}</text>" not in svg]
    assert not missing, f"docs/rulegraph.svg is stale (regenerate as the README says); missing {missing}"
