"""docs/api.md cannot rot: every ``adn_edge.x.y.Name`` in its code spans exists, and every
signature it writes (``adn_edge.x.y.Name(a, b=1, *, c=None)``) names real parameters, in
the real order, with the real literal defaults and no required parameter left out.

The Python blocks of the page import what they use (checked here without running them;
the robot example runs in test_readme_snippets.py against a real model directory).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from typing import Any

import pytest

from tests._util import REPO

DOC = REPO / "docs" / "api.md"
NAME = re.compile(r"adn_edge(?:\.\w+)+")
SIGNATURE = re.compile(r"^(adn_edge(?:\.\w+)+)\((.*)\)$")


def code_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


def fenced_python(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def resolve(dotted: str) -> Any:
    """The object a dotted name denotes: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name is not None and not ".".join(parts[:i]).startswith(exc.name):
                raise  # a module that exists but fails to import: a real problem
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def split_params(text: str) -> list[str]:
    """Top-level comma-separated parameters (brackets and quotes respected)."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def real_parameters(obj: Any) -> list[inspect.Parameter]:
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


DOC_TEXT = DOC.read_text(encoding="utf-8")
NAMES = sorted({m for span in code_spans(DOC_TEXT) for m in NAME.findall(span)})
SIGNATURES = sorted({m.group(1, 2) for span in code_spans(DOC_TEXT) if (m := SIGNATURE.match(span.strip()))})


def test_the_page_documents_the_public_api():
    for must in ("adn_edge.runtime.EngineSwitcher.open", "adn_edge.runtime.DeadlineGovernor.for_switcher",
                 "adn_edge.runtime.Policy.from_directory", "adn_edge.modeldir.preprocess.Preprocess.batch",
                 "adn_edge.modeldir.open_dir", "adn_edge.runtime.register_backend", "adn_edge.export.export",
                 "adn_edge.backends.tensorrt.build.build_directory", "adn_edge.bench.harness.run_bench"):
        assert must in NAMES, must
    assert len(SIGNATURES) >= 40


@pytest.mark.parametrize("dotted", NAMES)
def test_every_name_exists(dotted):
    resolve(dotted)


@pytest.mark.parametrize(("dotted", "params"), SIGNATURES)
def test_every_signature_matches_the_code(dotted, params):
    real = real_parameters(resolve(dotted))
    by_name = {p.name: p for p in real}
    documented = []
    for item in split_params(params):
        if item in ("*", "/"):
            continue
        name, _, default = item.lstrip("*").partition("=")
        name = name.split(":")[0].strip()
        assert name in by_name, f"{dotted}: no parameter {name!r} (real: {[p.name for p in real]})"
        documented.append(name)
        p = by_name[name]
        if item.startswith("**"):
            assert p.kind is inspect.Parameter.VAR_KEYWORD, f"{dotted}: {name} is not **kwargs"
        elif default:
            assert p.default is not inspect.Parameter.empty, f"{dotted}: {name} has no default"
            try:
                value = ast.literal_eval(default.strip())
            except ValueError:
                continue  # a name (print, a constant): not compared
            assert p.default == value, f"{dotted}: {name} defaults to {p.default!r}, not {value!r}"
        else:
            assert p.default is inspect.Parameter.empty or p.kind is inspect.Parameter.VAR_KEYWORD, \
                f"{dotted}: {name} has a default ({p.default!r}) the page leaves out"
    order = [p.name for p in real if p.name in documented]
    assert documented == order, f"{dotted}: documented order {documented}, real {order}"
    required = [p.name for p in real if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    assert set(required) <= set(documented), f"{dotted}: required {required} not all documented"


def test_python_blocks_import_real_names():
    blocks = fenced_python(DOC_TEXT)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)  # the blocks are valid Python
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adn_edge"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}") is not None, f"{node.module}.{alias.name}"
