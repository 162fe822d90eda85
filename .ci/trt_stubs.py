#!/usr/bin/env python3
"""Put repaired TensorRT type stubs in ``typings/`` for mypy (see ``mypy.ini``).

No CI machine has TensorRT or a GPU, so the TensorRT-facing modules are checked
statically against NVIDIA's API as published in ``tensorrt-stubs`` (PyPI). Known facts
about that package, all handled here:

* it installs only with ``--no-deps`` (its dependency is a placeholder package that
  downloads from a host we cannot reach);
* mypy does not find it as a stub package by itself, so its ``tensorrt/`` and
  ``tensorrt_bindings/`` ``.pyi`` files are copied into a folder named by
  ``mypy_path``;
* three mechanical repairs make them parse: parameters named ``in`` (a keyword) become
  ``in_``; ``add_scale_nd`` has a parameter without a default after defaulted ones
  (pybind11 allows it, Python does not) and gets ``= ...``; ``import tensorrt_libs``
  (a runtime-only package) becomes a module-typed name;
* a fourth makes them honest: the modules define ``bool`` as a DataType constant
  (``trt.bool``), which shadows the builtin in every ``-> bool`` annotation, so mypy
  would read each boolean result (``parser.parse``, ``set_timing_cache``...) as a
  DataType and call the failure branches unreachable; annotations are pointed at
  ``builtins.bool`` (the constant itself stays);
* what remains inside them is silenced by ``ignore_errors`` for those modules in
  ``mypy.ini``.

The output folder carries its own ``.gitignore`` (``*``): the stubs are never committed.
Usage: ``python .ci/trt_stubs.py [--out typings] [--from DIR]`` (``--from``: an already
installed ``tensorrt-stubs`` tree, for offline machines). Idempotent and quick when
the stamp file says the same version is already in place.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "10.13.0.35.1"
REPAIR_REVISION = "3"
PACKAGES = ("tensorrt", "tensorrt_bindings")
REPO = Path(__file__).resolve().parents[1]

_IN_PARAM = re.compile(r"(?<=[(,])(\s*)in(\s*:)")
_LIBS_IMPORT = re.compile(r"^import tensorrt_libs as tensorrt_libs\s*$", re.M)
_SCALE_ND = re.compile(r"(def add_scale_nd\(.*?power: Weights = None, channel_axis: int)(\))")
_ATTRIBUTE = re.compile(r"^\s+\w+\s*:\s*\S")
_BOOL_RETURN = re.compile(r"(->\s*)bool\b")
_BOOL_ANNOTATION = re.compile(r"([:\[,|(]\s*)bool\b(?!\s*[:=(])")


def repair(text: str) -> tuple[str, dict[str, int]]:
    """Apply the repairs; return the text and how often each applied."""
    counts = {"in": 0, "add_scale_nd": 0, "tensorrt_libs": 0, "bool": 0}
    out_lines = []
    in_docstring = False
    for line in text.splitlines(keepends=True):
        quotes = line.count('"""')
        if not in_docstring:
            is_def = line.lstrip().startswith("def ")
            if is_def and "in" in line:
                line, n = _IN_PARAM.subn(r"\1in_\2", line)
                counts["in"] += n
            if (is_def or _ATTRIBUTE.match(line)) and "bool" in line:
                code, sep, comment = line.partition("  #")
                code, n1 = _BOOL_RETURN.subn(r"\1builtins.bool", code)
                code, n2 = _BOOL_ANNOTATION.subn(r"\1builtins.bool", code)
                line = code + sep + comment
                counts["bool"] += n1 + n2
        if quotes % 2:
            in_docstring = not in_docstring
        out_lines.append(line)
    text = "".join(out_lines)
    if counts["bool"]:
        text = text.replace("from __future__ import annotations\n",
                            "from __future__ import annotations\nimport builtins\n", 1)
    text, n = _SCALE_ND.subn(r"\1 = ...\2", text)
    counts["add_scale_nd"] += n
    text, n = _LIBS_IMPORT.subn("import types as _types\ntensorrt_libs: _types.ModuleType", text)
    counts["tensorrt_libs"] += n
    return text, counts


def fetch(dest: Path) -> Path:
    """pip-install the pinned stubs (no dependencies) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(dest), f"tensorrt-stubs=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"trt_stubs: `{' '.join(cmd)}` failed:\n{proc.stdout}{proc.stderr}")
        raise SystemExit(2)
    return dest


def install(source: Path, out: Path) -> dict[str, int]:
    totals = {"in": 0, "add_scale_nd": 0, "tensorrt_libs": 0, "bool": 0}
    out.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        src = source / pkg
        if not src.is_dir():
            raise SystemExit(f"trt_stubs: {src} is missing; is this tensorrt-stubs {VERSION}?")
        target = out / pkg
        if target.exists():
            shutil.rmtree(target)
        for pyi in sorted(src.rglob("*.pyi")):
            text, counts = repair(pyi.read_text(encoding="utf-8"))
            for k, v in counts.items():
                totals[k] += v
            try:
                ast.parse(text, filename=str(pyi), feature_version=(3, 10))
            except SyntaxError as exc:
                raise SystemExit(f"trt_stubs: {pkg}/{pyi.relative_to(src)} still does not parse after repair: "
                                 f"{exc}") from None
            dest = target / pyi.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
    missing = [k for k, v in totals.items() if v == 0]
    if missing:  # a different stub release: the repairs may no longer be right
        raise SystemExit(f"trt_stubs: expected repair(s) {missing} found nothing to repair; "
                         f"re-check the repairs against tensorrt-stubs {VERSION}.")
    (out / ".gitignore").write_text("# generated by .ci/trt_stubs.py; never commit\n*\n", encoding="utf-8")
    (out / ".trt-stubs-version").write_text(f"{VERSION}+r{REPAIR_REVISION}\n", encoding="utf-8")
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=REPO / "typings", help="folder named by mypy_path")
    ap.add_argument("--from", dest="source", type=Path, default=None,
                    help="an installed tensorrt-stubs tree (holding tensorrt/ and tensorrt_bindings/)")
    ap.add_argument("--force", action="store_true", help="reinstall even when the stamp matches")
    args = ap.parse_args(argv)
    stamp = args.out / ".trt-stubs-version"
    if not args.force and stamp.is_file() and stamp.read_text().strip() == f"{VERSION}+r{REPAIR_REVISION}" \
            and all((args.out / p / "__init__.pyi").is_file() for p in PACKAGES):
        print(f"trt_stubs: tensorrt-stubs {VERSION} already in {args.out}")
        return 0
    if args.source is not None:
        totals = install(args.source, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
            totals = install(fetch(Path(tmp)), args.out)
    print(f"trt_stubs: tensorrt-stubs {VERSION} -> {args.out} (repaired: {totals['in']} 'in' parameters, "
          f"{totals['add_scale_nd']} add_scale_nd signature, {totals['tensorrt_libs']} tensorrt_libs imports, "
          f"{totals['bool']} bool annotations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
