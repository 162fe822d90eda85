"""The package's shape, asserted: imports point one way, no circles (docs/architecture.md).

Every import statement of every module under ``adn_edge/`` is read from its source
(function-level and ``TYPE_CHECKING`` imports included: a lazy import is still a
dependency), so a future edit that makes the runtime import the CLI, or a backend
import the bench, fails here instead of surfacing on a robot without torch.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "adn_edge"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                out.append((mod, top))
                for a in child.names:  # `from adn_edge import subnet` imports a module
                    if f"{mod}.{a.name}" in MODULES:
                        out.append((f"{mod}.{a.name}", top))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            else:
                visit(child, top)

    visit(tree, True)
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(source: str, allowed_inside: tuple[str, ...] = (), forbidden: tuple[str, ...] = (),
                only: tuple[str, ...] | None = None) -> list[str]:
    bad = []
    for mod, imports in IMPORTS.items():
        if not _under(mod, source):
            continue
        for target, _top in imports:
            if target == "adn_edge" or _under(target, *allowed_inside):  # the root holds __version__ only
                continue
            if _under(target, *forbidden):
                bad.append(f"{mod} imports {target}")
            elif only is not None and _under(target, "adn_edge") and not _under(target, *only):
                bad.append(f"{mod} imports {target}")
    return bad


CORE = ("adn_edge.errors", "adn_edge.fileio", "adn_edge.subnet")
UPPER = ("adn_edge.bench", "adn_edge.train", "adn_edge.cli", "adn_edge.export", "adn_edge.quantize",
         "adn_edge.demo", "adn_edge.describe", "adn_edge.doctor", "adn_edge.data")
TORCH_SIDE = ("adn_edge.models", "adn_edge.materialize", "adn_edge.checkpoint", "adn_edge.flops")


def test_the_walk_sees_the_package() -> None:
    assert {"adn_edge.runtime.switcher", "adn_edge.backends.tensorrt.runner", "adn_edge.modeldir.manifest",
            "adn_edge.cli.app"} <= set(MODULES)
    assert ("adn_edge.runtime.backend", True) in IMPORTS["adn_edge.runtime.switcher"]
    assert ("adn_edge.subnet", True) in IMPORTS["adn_edge.runtime.switcher"]  # `from adn_edge import subnet`


def test_core_and_modeldir_import_nothing_above_them() -> None:
    assert _violations("adn_edge.errors", only=()) == []
    assert _violations("adn_edge.subnet", only=("adn_edge.errors",)) == []
    assert _violations("adn_edge.fileio", only=("adn_edge.errors",)) == []
    assert _violations("adn_edge.modeldir", only=("adn_edge.modeldir", *CORE)) == []
    assert _violations("adn_edge.platform", only=("adn_edge.platform", *CORE)) == []


def test_runtime_imports_only_the_layers_below_it() -> None:
    """The runtime names its backends as strings (runtime.backend.BUILTIN_BACKENDS) and
    imports no backend module, no torch-side module and nothing of the tools."""
    only = ("adn_edge.runtime", "adn_edge.modeldir", *CORE)
    assert _violations("adn_edge.runtime", only=only) == []


def test_backends_depend_on_the_interface_not_on_the_tools() -> None:
    bad = _violations("adn_edge.backends", forbidden=UPPER)
    runtime_uses = {t for m, imps in IMPORTS.items() if _under(m, "adn_edge.backends")
                    for t, _ in imps if _under(t, "adn_edge.runtime")}
    assert bad == [] and runtime_uses <= {"adn_edge.runtime.backend"}, (bad, runtime_uses)
    # Only the torch backend may reach the torch side.
    assert _violations("adn_edge.backends.tensorrt", forbidden=TORCH_SIDE) == []
    assert _violations("adn_edge.backends.onnxruntime", forbidden=TORCH_SIDE) == []
    assert _violations("adn_edge.backends.cuda", only=("adn_edge.backends.cuda", "adn_edge.platform", *CORE)) == []


def test_models_power_and_tools_point_down() -> None:
    assert _violations("adn_edge.models", forbidden=(*UPPER, "adn_edge.backends", "adn_edge.runtime",
                                                     "adn_edge.materialize")) == []
    assert _violations("adn_edge.power", only=("adn_edge.power", *CORE)) == []
    assert _violations("adn_edge.export", forbidden=("adn_edge.bench", "adn_edge.cli", "adn_edge.quantize",
                                                     "adn_edge.backends", "adn_edge.demo")) == []
    for lib in ("adn_edge.bench", "adn_edge.train", "adn_edge.quantize", "adn_edge.export", "adn_edge.runtime",
                "adn_edge.backends", "adn_edge.modeldir", "adn_edge.models", "adn_edge.power", "adn_edge.platform"):
        assert _violations(lib, forbidden=("adn_edge.cli", "adn_edge.demo")) == [], lib


TORCH_FREE = ("adn_edge.runtime", "adn_edge.modeldir", "adn_edge.backends.onnxruntime", "adn_edge.backends.tensorrt",
              "adn_edge.backends.cuda", "adn_edge.power", "adn_edge.platform", "adn_edge.errors", "adn_edge.fileio",
              "adn_edge.subnet")


@pytest.mark.parametrize("prefix", TORCH_FREE)
def test_robot_side_never_imports_torch(prefix: str) -> None:
    """Not even lazily: these run on a robot that has no torch."""
    bad = [f"{m} imports {t}" for m, imps in IMPORTS.items() if _under(m, prefix)
           for t, _ in imps if _under(t, "torch", *TORCH_SIDE)]
    assert bad == []


def test_no_circular_imports_at_module_level() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, imports in IMPORTS.items():
        for target, top in imports:
            if top and target in MODULES and target != mod:
                graph[mod].add(target)
    # A package's __init__ importing its own submodules is how packages re-export;
    # a submodule importing its package back is the circle.
    for mod in list(graph):
        graph[mod] = {t for t in graph[mod] if not (mod == t.rsplit(".", 1)[0] and _under(t, mod))}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt, [*stack, nxt])
        state[node] = 2

    for mod in sorted(MODULES):
        if mod not in state:
            dfs(mod, [mod])
    assert cycles == []


def test_no_package_is_named_like_generated_output() -> None:
    """pytest, black and ruff skip folders named build/dist by default."""
    assert not [p for p in PKG.rglob("*") if p.is_dir() and p.name in {"build", "dist"}]
