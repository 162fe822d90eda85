#!/usr/bin/env python3
"""Static check: every TensorRT name the code uses exists in every supported release.

mypy checks the TensorRT-facing code against one stub release (10.13). Jetsons run
10.3 (JetPack 6) and 10.16 (JetPack 7.2), x86 wheels are 11.x, and names differ: 11.x has
no INT8 calibrator, no FP16/INT8 builder flags, no ``ICudaEngine.device_memory_size``. A
name missing from one release is an ``AttributeError`` there, found by the first user of
that release. This check reads the name-level API listings of each release
(``tests/fixtures/tensorrt/api-*.json``) and, for every module under ``adn_edge/`` that
imports ``tensorrt``, every use of

- ``trt.X``, ``trt.X.Y``, ``trt.X.Y.Z`` (module names, members, nested enum members), and
- ``obj.member`` where ``obj`` is known to be a TensorRT object: annotated with a
  ``trt.`` type, assigned from a TensorRT constructor or factory (:data:`RETURNS`), or a
  field of a local class annotated so (``slot.context`` of a dataclass),

must exist in each listing, unless it is guarded: inside an ``if`` (or conditional
expression, or ``and``) whose test calls ``hasattr`` or reads a version
(``trt_major``, ``version``), after such an ``if`` that returns or raises, or inside a
``try`` that catches ``AttributeError``. Annotations are not uses (they are strings at
run time), nor are ``getattr``/``setattr`` with literal names (the escape hatch, guarded
by construction). Dunder names are not listed and not checked.

Usage: ``python .ci/trt_names.py [--listings DIR] [PATH ...]`` (default: the package);
exit 1 with one line per unguarded missing name. ``tests/backends/tensorrt/test_trt_api_names.py``
runs it in the test suite.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTINGS = REPO / "tests" / "fixtures" / "tensorrt"

RETURNS: dict[tuple[str, str], str] = {
    ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_network"): "INetworkDefinition",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("Builder", "build_serialized_network"): "IHostMemory",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_calibration_profile"): "IOptimizationProfile",
    ("ITimingCache", "serialize"): "IHostMemory",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("ICudaEngine", "create_engine_inspector"): "EngineInspector",
    ("ICudaEngine", "serialize"): "IHostMemory",
    ("INetworkDefinition", "get_input"): "ITensor",
    ("INetworkDefinition", "get_output"): "ITensor",
    ("OnnxParser", "get_error"): "ParserError",
}
"""What TensorRT's factories return (the listings hold names, not signatures)."""
GUARD_WORDS = ("trt_major", "TRT_MAJOR", "version")


@dataclass(frozen=True)
class Listing:
    version: str
    module: frozenset[str]
    classes: dict[str, frozenset[str]]

    @classmethod
    def load(cls, path: Path) -> Listing:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(str(data["version"]), frozenset(data["module"]),
                   {k: frozenset(v) for k, v in data["classes"].items()})


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    owner: str | None
    """The TensorRT class the name is looked up on; None for a module-level name."""
    name: str
    guarded: bool
    text: str

    def missing_in(self, listing: Listing) -> bool:
        if self.name.startswith("__"):
            return False
        if self.owner is None:
            return self.name not in listing.module
        members = listing.classes.get(self.owner)
        return members is not None and self.name not in members


def _is_guard_test(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "hasattr":
            return True
        if isinstance(sub, ast.Attribute) and any(w in sub.attr for w in GUARD_WORDS):
            return True
        if isinstance(sub, ast.Name) and any(w in sub.id for w in GUARD_WORDS):
            return True
    return False


def _exits(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Raise, ast.Return, ast.Continue, ast.Break))


def _catches_attribute_error(node: ast.Try) -> bool:
    for h in node.handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        if any(isinstance(n, ast.Name) and n.id == "AttributeError" for n in names):
            return True
    return False


@dataclass
class _Scope:
    vars: dict[str, str] = field(default_factory=dict)
    """Variable -> type: ``trt:Name`` for a TensorRT class, ``local:Name`` for a class of the module."""


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.tree = ast.parse(source, filename=path)
        self.lines = source.splitlines()
        self.aliases: set[str] = set()
        self.direct: dict[str, str] = {}
        """``from tensorrt import X as Y`` -> {Y: X}."""
        self.fields: dict[str, dict[str, str]] = {}
        """Local class -> field -> type (annotated fields and ``self.x`` in its methods)."""
        self.uses: list[Use] = []
        self.scopes: list[_Scope] = [_Scope()]
        self.guard = 0
        self.cls_stack: list[str] = []
        self._collect_imports()
        self._collect_fields()

    # ------------------------------------------------------------------ pre-passes

    def _collect_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "tensorrt":
                        self.aliases.add(a.asname or "tensorrt")
            elif isinstance(node, ast.ImportFrom) and node.module == "tensorrt" and not node.level:
                for a in node.names:
                    self.direct[a.asname or a.name] = a.name

    def _collect_fields(self) -> None:
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.ClassDef):
                continue
            table = self.fields.setdefault(node.name, {})
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    t = self.annotation_type(stmt.annotation)
                    if t:
                        table[stmt.target.id] = t
            for sub in ast.walk(node):
                if isinstance(sub, ast.AnnAssign) and _self_attr(sub.target):
                    t = self.annotation_type(sub.annotation)
                    if t:
                        table[sub.target.attr] = t  # type: ignore[union-attr]
                elif isinstance(sub, ast.Assign):
                    for target in sub.targets:
                        if _self_attr(target) and target.attr not in table:  # type: ignore[union-attr]
                            t = self._ctor_type(sub.value)
                            if t:
                                table[target.attr] = t  # type: ignore[union-attr]

    # ------------------------------------------------------------------ typing

    def annotation_type(self, ann: ast.AST | None) -> str | None:
        """``trt.X``, ``trt.X | None``, ``Optional[trt.X]``, ``"trt.X"``, a local class;
        containers keep their element type as ``seq:T`` / ``map:T``."""
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                return self.annotation_type(ast.parse(ann.value, mode="eval").body)
            except SyntaxError:
                return None
        if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
            return self.annotation_type(ann.left) or self.annotation_type(ann.right)
        if isinstance(ann, ast.Attribute) and isinstance(ann.value, ast.Name) and ann.value.id in self.aliases:
            return f"trt:{ann.attr}"
        if isinstance(ann, ast.Name):
            if ann.id in self.direct:
                return f"trt:{self.direct[ann.id]}"
            if ann.id in self.fields:
                return f"local:{ann.id}"
            return None
        if isinstance(ann, ast.Subscript):
            base = ann.value.id if isinstance(ann.value, ast.Name) else getattr(ann.value, "attr", "")
            args = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            if base == "Optional":
                return self.annotation_type(args[0])
            if base in ("tuple", "list", "Sequence", "Iterable", "set", "frozenset") and args:
                inner = self.annotation_type(args[0])
                return f"seq:{inner}" if inner else None
            if base in ("dict", "Mapping") and len(args) == 2:
                inner = self.annotation_type(args[1])
                return f"map:{inner}" if inner else None
        return None

    def _ctor_type(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in self.aliases:
                return f"trt:{f.attr}"
            if isinstance(f, ast.Name) and f.id in self.direct:
                return f"trt:{self.direct[f.id]}"
        return None

    def expr_type(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            for scope in reversed(self.scopes):
                if node.id in scope.vars:
                    return scope.vars[node.id]
            return None
        if isinstance(node, ast.Attribute):
            if _self_attr(node) and self.cls_stack:
                return self.fields.get(self.cls_stack[-1], {}).get(node.attr)
            base = self.expr_type(node.value)
            if base and base.startswith("local:"):
                return self.fields.get(base[6:], {}).get(node.attr)
            return None
        if isinstance(node, ast.Call):
            ctor = self._ctor_type(node)
            if ctor:
                return ctor
            f = node.func
            if isinstance(f, ast.Name) and f.id in self.fields:
                return f"local:{f.id}"
            if isinstance(f, ast.Attribute):
                base = self.expr_type(f.value)
                if base and base.startswith("trt:"):
                    ret = RETURNS.get((base[4:], f.attr))
                    return f"trt:{ret}" if ret else None
                if base and base.startswith("map:") and f.attr == "values":
                    return f"seq:{base[4:]}"
                if base and base.startswith("map:") and f.attr == "get":
                    return base[4:]
        if isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Slice):
            base = self.expr_type(node.value)
            if base and base.startswith(("map:", "seq:")):
                return base[4:]
        return None

    def _bind(self, target: ast.AST, t: str | None) -> None:
        if isinstance(target, ast.Name):
            if t:
                self.scopes[-1].vars[target.id] = t
            else:
                self.scopes[-1].vars.pop(target.id, None)

    # ------------------------------------------------------------------ uses

    def _use(self, node: ast.AST, owner: str | None, name: str) -> None:
        text = self.lines[node.lineno - 1].strip() if 0 < node.lineno <= len(self.lines) else ""  # type: ignore[attr-defined]
        self.uses.append(Use(self.path, node.lineno, owner, name, self.guard > 0, text))  # type: ignore[attr-defined]

    def _chain(self, node: ast.Attribute) -> list[str] | None:
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and cur.id in self.aliases:
            return list(reversed(parts))
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        chain = self._chain(node)
        if chain is not None:
            if isinstance(getattr(node, "parent", None), ast.Attribute):
                return  # the outermost attribute of a chain checks the whole chain
            self._use(node, None, chain[0])
            if len(chain) >= 2:
                self._use(node, chain[0], chain[1])
            if len(chain) >= 3:
                self._use(node, chain[1], chain[2])
            return
        base = self.expr_type(node.value)
        if base and base.startswith("trt:"):
            self._use(node, base[4:], node.attr)
        self.generic_visit(node)

    # ------------------------------------------------------------------ structure

    def visit_Module(self, node: ast.Module) -> None:  # noqa: N802
        _set_parents(node)
        self._block(node.body)

    def _block(self, body: list[ast.stmt]) -> None:
        raised = 0
        for stmt in body:
            self.visit(stmt)
            if isinstance(stmt, ast.If) and not stmt.orelse and _is_guard_test(stmt.test) and _exits(stmt.body):
                self.guard += 1
                raised += 1
        self.guard -= raised

    def _branches(self, test: ast.expr, *branches: list[ast.stmt] | ast.expr) -> None:
        """Visit ``test``, then each branch, guarded when ``test`` is a guard."""
        guard = _is_guard_test(test)
        self.visit(test)
        self.guard += guard
        for branch in branches:
            if isinstance(branch, list):
                self._block(branch)
            else:
                self.visit(branch)
        self.guard -= guard

    def visit_If(self, node: ast.If) -> None:  # noqa: N802
        self._branches(node.test, node.body, node.orelse)

    def visit_IfExp(self, node: ast.IfExp) -> None:  # noqa: N802
        self._branches(node.test, node.body, node.orelse)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:  # noqa: N802
        guarded = 0
        for value in node.values:
            self.visit(value)
            if isinstance(node.op, ast.And) and _is_guard_test(value):
                self.guard += 1
                guarded += 1
        self.guard -= guarded

    def visit_Try(self, node: ast.Try) -> None:  # noqa: N802
        guard = _catches_attribute_error(node)
        self.guard += guard
        self._block(node.body)
        self.guard -= guard
        for h in node.handlers:
            self._block(h.body)
        self._block(node.orelse)
        self._block(node.finalbody)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        scope = _Scope()
        args = node.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            t = self.annotation_type(a.annotation)
            if t:
                scope.vars[a.arg] = t
        for default in [*args.defaults, *[d for d in args.kw_defaults if d is not None]]:
            self.visit(default)
        self.scopes.append(scope)
        self._block(node.body)
        self.scopes.pop()

    visit_FunctionDef = _function  # noqa: N815
    visit_AsyncFunctionDef = _function  # noqa: N815

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        for b in node.bases:
            self.visit(b)
        for d in node.decorator_list:
            self.visit(d)
        self.cls_stack.append(node.name)
        for stmt in node.body:  # class-level annotations are declarations, not uses
            if isinstance(stmt, ast.AnnAssign):
                if stmt.value is not None:
                    self.visit(stmt.value)
                continue
            self.visit(stmt)
        self.cls_stack.pop()

    def visit_Lambda(self, node: ast.Lambda) -> None:  # noqa: N802
        self.visit(node.body)

    def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        self.visit(node.value)
        t = self.expr_type(node.value)
        for target in node.targets:
            self.visit(target)
            self._bind(target, t)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:  # noqa: N802
        if node.value is not None:
            self.visit(node.value)
        if not isinstance(node.target, ast.Name):
            self.visit(node.target)
        self._bind(node.target, self.annotation_type(node.annotation) or
                   (self.expr_type(node.value) if node.value is not None else None))

    def visit_For(self, node: ast.For) -> None:  # noqa: N802
        self.visit(node.iter)
        t = self.expr_type(node.iter)
        self._bind(node.target, t[4:] if t and t.startswith("seq:") else None)
        self._block(node.body)
        self._block(node.orelse)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2 and \
                isinstance(node.args[1], ast.Constant):
            self.visit(node.args[0])  # the literal name is the dynamic escape hatch, not a use
            for a in node.args[2:]:
                self.visit(a)
            return
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        if node.module == "tensorrt" and not node.level:
            for a in node.names:
                self._use(node, None, a.name)


def _self_attr(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _set_parents(tree: ast.AST) -> None:
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent  # type: ignore[attr-defined]


def scan(source: str, path: str = "<source>") -> list[Use]:
    """Every TensorRT name ``source`` uses (none when it does not import tensorrt)."""
    scanner = _Scanner(path, source)
    if not scanner.aliases and not scanner.direct:
        return []
    scanner.visit(scanner.tree)
    return scanner.uses


def violations(uses: Iterable[Use], listing: Listing) -> list[str]:
    return [f"{u.path}:{u.line}: {'trt.' + (u.owner + '.' if u.owner else '')}{u.name} does not exist in TensorRT "
            f"{listing.version} and is not guarded by a version check or hasattr: {u.text}"
            for u in uses if not u.guarded and u.missing_in(listing)]


def listings(folder: Path = LISTINGS) -> list[Listing]:
    return [Listing.load(p) for p in sorted(folder.glob("api-*.json"))]


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(p.rglob("*.py"))
        else:
            yield p


def check(paths: Iterable[Path], folder: Path = LISTINGS) -> tuple[list[Use], dict[str, list[str]]]:
    """All uses found, and the violations per release."""
    uses: list[Use] = []
    for f in python_files(paths):
        rel = str(f.resolve().relative_to(REPO)) if f.resolve().is_relative_to(REPO) else str(f)
        uses.extend(scan(f.read_text(encoding="utf-8"), rel))
    return uses, {lst.version: violations(uses, lst) for lst in listings(folder)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[REPO / "adn_edge"])
    ap.add_argument("--listings", type=Path, default=LISTINGS)
    args = ap.parse_args(argv)
    uses, found = check(args.paths, args.listings)
    bad = [line for lines in found.values() for line in lines]
    for line in bad:
        print(line)
    print(f"trt_names: {len(uses)} TensorRT name uses checked against {', '.join(found)}: "
          f"{len(bad)} unguarded missing name(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
