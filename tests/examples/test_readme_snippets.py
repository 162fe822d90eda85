"""The README's promises that code can check.

* "Two commands" holds exactly the two set-up commands, and the test one is what
  ``.ci/run`` runs;
* every Python block of README.md, docs/api.md and docs/runtime.md that runs on
  ``engines/demo`` (what ``adn-edge demo`` writes) runs as written on a real model
  directory: the embedded model, exported, with a bench report (the demo directory's
  other content, ``eval.json``, only refines the ranking);
* every relative link of the README leads to a file of the repository.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests._util import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
DEMO_COMMAND = "pip install torch==2.13.0 && pip install -e . && adn-edge demo"
TEST_COMMAND = 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest -q'
DOCS_WITH_DEMO_SNIPPETS = ("README.md", "docs/api.md", "docs/runtime.md")


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, f"no section {title!r}"
    return m.group(1)


def test_two_commands_are_the_two_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```bash\n(.*?)```", section(README, "Two commands"), flags=re.S)
    assert [b.strip() for b in blocks] == [DEMO_COMMAND, TEST_COMMAND]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert TEST_COMMAND in ci
    assert '"Two commands"' in (REPO / ".ci" / "run").read_text()  # the comment names the real section


def test_readme_has_its_results_and_stays_short():
    results = section(README, "Results")
    for needle in ("**The demo**", "**Training**", "**CPU runtime**", "(docs/results.md)"):
        assert needle in results, needle
    assert "<!-- filled by the lead -->" not in results
    docs = (REPO / "docs" / "results.md").read_text()
    for title in ("## Training: does every sub-network work, on every seed?", "## CPU runtime modes",
                  "## The embedded model and the demo"):
        assert title in docs, title  # the tables the README summarises
    assert len(README.splitlines()) <= 250


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not re.match(r"https?://", target):
            assert (REPO / target).exists(), target


def demo_snippets() -> list[tuple[str, int, str]]:
    out = []
    for name in DOCS_WITH_DEMO_SNIPPETS:
        text = (REPO / name).read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S)):
            if '"engines/demo"' in block:
                out.append((name, i, block))
    return out


@pytest.fixture(scope="module")
def demo_like(embedded_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's directory with a (short) CPU bench report, as the demo leaves it."""
    from adn_edge.bench.harness import BenchOptions, run_bench

    d = tmp_path_factory.mktemp("demo-like") / "demo"
    shutil.copytree(embedded_dir, d)
    run_bench(d, BenchOptions(device="cpu", iterations=5, warmup_iters=1, warmup_s=0.0, threads=1))
    return d


def test_there_are_snippets_to_run():
    names = {name for name, _, _ in demo_snippets()}
    assert names == set(DOCS_WITH_DEMO_SNIPPETS)


@pytest.mark.parametrize(("name", "index", "code"), demo_snippets(), ids=lambda v: str(v)[:20])
def test_snippet_runs(name, index, code, demo_like, capsys):
    code = code.replace('"engines/demo"', repr(str(demo_like)))
    exec(compile(code, f"{name}[python block {index}]", "exec"), {"__name__": "__snippet__"})
    capsys.readouterr()
