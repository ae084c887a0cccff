"""A demo run leaves the checkout as it found it: tracked files unchanged, everything it writes in ignored paths."""
from __future__ import annotations

import subprocess


def _git(repo, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, text=True)


def test_demo_run_changes_no_tracked_file_and_writes_only_ignored_paths(demo_run, repo):
    tracked = set(_git(repo, "ls-files").stdout.splitlines())
    changed = [name for name in tracked
               if (demo_run / name).is_file() and (demo_run / name).read_bytes() != (repo / name).read_bytes()]
    assert not changed, f"the demo run rewrote tracked files: {changed}"
    written = sorted(str(p.relative_to(demo_run)) for p in demo_run.rglob("*")
                     if p.is_file() and str(p.relative_to(demo_run)) not in tracked)
    assert any(name.startswith("results/benchmarks/rules/") for name in written)  # rule benchmarks are run outputs
    # --no-index: judged by .gitignore alone, as for a fresh clone's first run
    ignored = set(_git(repo, "check-ignore", "--no-index", "--stdin", stdin="\n".join(written)).stdout.splitlines())
    unignored = [name for name in written if name not in ignored]
    assert not unignored, f"the demo run wrote files a fresh clone would show as untracked: {unignored[:20]}"
