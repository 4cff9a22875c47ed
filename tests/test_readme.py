"""The README and docs/ as a newcomer meets them: a short README whose Python quick start runs as
written, links that resolve, and no wording about the history of the work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = ["method", "results", "performance", "distributed", "reliability", "export", "python-api", "cli"]

SESSION = re.compile(r"\bsessions?\b", re.I)
ISSUE_NUMBER = re.compile(r"\b(issues?|PR|pull request)\s*#?\s*\d+|(?<![\w&/.-])#\d+\b", re.I)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_readme_is_short():
    assert len(_text(README)) <= 12_000, f"README.md has {len(_text(README))} characters; keep it <= 12,000"


def test_docs_pages_exist_and_readme_links_resolve():
    assert {p.stem for p in DOCS} >= set(PAGES)
    for doc in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", _text(doc)):
            assert (doc.parent / target).is_file(), f"{doc.name} links to missing {target}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_no_history_of_the_work(path):
    text = _text(path)
    assert not SESSION.search(text), f"{path.name}: {SESSION.search(text).group(0)!r}"
    m = ISSUE_NUMBER.search(text)
    assert not m, f"{path.name}: issue number {m.group(0)!r}"


def test_python_quick_start_runs(tmp_path):
    """The README's first ```python block, run as written in a fresh interpreter."""
    blocks = re.findall(r"```python\n(.*?)```", _text(README), re.S)
    assert blocks, "README.md has no ```python block"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    m = re.search(r"test accuracy: ([0-9.]+)", run.stdout)
    assert m and float(m.group(1)) > 0.8, run.stdout
