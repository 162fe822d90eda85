"""``adn-edge info``: what a checkpoint, ONNX graph, engine or model directory holds.

The library (:func:`adn_edge.describe.describe`) gives the facts as JSON values; this
module words them for people: no Python reprs (``None``, ``{...}``, ``[...]``), shapes
as ``Nx3x224x224``, sizes in MB, sub-networks in the order of every other table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import typer

from adn_edge.cli.output import console, gmacs, print_json, table

CONTAINERS = {
    "plain": "plain state dict (official released weights)",
    "training": "training checkpoint",
    "state_dict": "dict with a 'state_dict' entry",
    "safetensors": "safetensors",
    "adn-edge": "adn-edge (safetensors with an adn-edge header)",
}


def human(value: Any) -> str:
    """One value in words: ``-`` for none, numbers with thousands separators,
    mappings as ``key=value, ...``, sequences comma-separated."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_nested(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(human(v) for v in value) or "-"
    return str(value)


def _nested(value: Any) -> str:
    # Inside key=value no comma-space may appear, or the value would read as more pairs.
    if isinstance(value, (list, tuple)):
        return ",".join(_nested(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return "{" + human(value) + "}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return human(value)


def shape(dims: Any) -> str:
    """``[None, 3, 224, 224]`` -> ``Nx3x224x224`` (a dynamic dimension by its name, else N)."""
    if not isinstance(dims, (list, tuple)):
        return human(dims)
    return "x".join("N" if d is None or d == "" else str(d) for d in dims)


def size(n: Any) -> str:
    if not isinstance(n, int):
        return human(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def source(src: Any) -> str:
    """A model directory's ``source`` record: the weights it was exported from."""
    if not isinstance(src, Mapping):
        return human(src)
    if not src.get("path"):
        return f"{src.get('weights') or 'unknown'} weights (no checkpoint)"
    return (f"{src['path']} ({CONTAINERS.get(src.get('container'), human(src.get('container')))}, "
            f"{human(src.get('weights'))} weights, sha256 {human(src.get('sha256'))})")


def arch_line(d: Mapping[str, Any]) -> str:
    arch, how = d.get("arch"), d.get("arch_source")
    if arch and how == "guessed":
        return (f"{arch} (guessed: the file does not record it; {arch} is the one registered architecture whose "
                "tensor names match, as `adn-edge export` decides without --arch)")
    if arch:
        return f"{arch} (recorded in the file)"
    return ("unknown: the file does not record it and its tensor names match no single registered architecture; "
            "pass --arch to `adn-edge export` / `adn-edge eval`")


def checkpoint_lines(d: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    yield "path", d["path"]
    yield "size", size(d.get("bytes"))
    yield "sha256", d.get("sha256")
    yield "container", CONTAINERS.get(d.get("container"), human(d.get("container")))
    yield "weights", d.get("weights")
    yield "arch", arch_line(d)
    yield "classes", human(d.get("num_classes"))
    yield "tensors", f"{human(d.get('entries'))} ({human(d.get('float_elements'))} float elements)"
    if d.get("epoch") is not None:
        yield "epoch", human(d["epoch"])
    if d.get("header"):
        yield "header", dict(d["header"])


def onnx_lines(d: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    yield "path", d["path"]
    yield "size", size(d.get("bytes"))
    yield "opset", ", ".join(f"{o.get('domain')} {o.get('version')}" for o in d.get("opset") or []) or "-"
    for io in ("inputs", "outputs"):
        yield io, ", ".join(f"{v.get('name')} {v.get('elem_type')} {shape(v.get('shape'))}"
                            for v in d.get(io) or []) or "-"
    yield "initializers", f"{human(d.get('initializers'))} ({human(d.get('initializer_elements'))} elements)"
    ops = d.get("ops") or {}
    yield "ops", ", ".join(f"{op} x{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"
    if d.get("metadata"):
        yield "metadata", dict(d["metadata"])


def generic_lines(d: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if k == "kind":
            continue
        yield k, size(v) if k == "bytes" else v if isinstance(v, Mapping) else human(v)


def print_lines(title: str, lines: Iterator[tuple[str, Any]]) -> None:
    """``label: value`` lines; a mapping value becomes indented ``key: value`` lines."""
    from rich.text import Text

    c = console()
    c.print(Text(title, style="bold"))
    for label, value in lines:
        if isinstance(value, Mapping):
            c.print(Text.assemble((label, "bold"), ":"))
            for k, v in value.items():
                c.print(Text.assemble("  ", (str(k), "bold"), ": ", human(v)))
        else:
            c.print(Text.assemble((label, "bold"), ": ", human(value)))


def print_directory(d: Mapping[str, Any]) -> None:
    from rich.text import Text

    c = console()
    inp = d.get("input") or {}
    about = " ".join(str(inp[k]) for k in ("dtype", "layout") if inp.get(k))
    c.print(Text.assemble((d["path"], "bold"), f": {d['arch']}, {d['num_stages']} skippable stages, "
                          f"{d['num_classes']} classes, input {shape(inp.get('shape'))}"
                          + (f" {about}" if about else "") + (f", opset {d['opset']}" if d.get("opset") else "")))
    c.print(f"source: {source(d.get('source'))}", markup=False)
    table("sub-networks (parity: relative error of the fp32 graph vs PyTorch)",
          ["code", "skip_cfg", "GMACs", "params", "files", "engines", "parity"],
          [(s["code"], human(s["skip_cfg"]), gmacs(s["gmacs"]), human(s["params"]), human(s["files"]),
            human(s["engines"]), f"{s['parity_fp32']:.1e}" if s["parity_fp32"] is not None else "-")
           for s in d["subnets"]])
    if d["segments"]:
        table("segments (segmented mode)", ["segment", "form", "input", "output", "files", "engines"],
              [(s["segment"], s["kind"], shape(s["input_shape"]), shape(s["output_shape"]), human(s["files"]),
                human(s["engines"])) for s in d["segments"]])
    c.print("results: " + (", ".join(d["results"]) if d["results"] else "none"), markup=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        path: Path = typer.Argument(..., help="A checkpoint, .onnx, .engine or model directory."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Describe a checkpoint, an ONNX graph, a TensorRT engine or a model directory."""
        from adn_edge.describe import describe

        d = describe(path)
        if as_json:
            print_json(d)
            return
        if d["kind"] == "model-directory":
            print_directory(d)
        elif d["kind"] == "checkpoint":
            print_lines("checkpoint", checkpoint_lines(d))
        elif d["kind"] == "onnx":
            print_lines("ONNX graph", onnx_lines(d))
        else:
            print_lines("TensorRT engine" if d["kind"] == "tensorrt-engine" else str(d["kind"]), generic_lines(d))
