"""Which TensorRT engines run each sub-network, and which buffer each one reads and writes.

The TensorRT backend executes a sub-network as a *program*: an ordered list of
engines on one stream. Monolithically that is one engine per sub-network; in
segmented mode it is the S segment engines of the code's flags, part k's output
feeding part k+1. Deciding that (and sizing the device buffers between them) is
plain bookkeeping over the manifest, kept here so it is tested on machines without
a GPU; :mod:`~adn_edge.backends.tensorrt.runner` only binds and launches.

Buffers. ``input`` (the image) and ``logits`` hold the program's two ends. Between
segments, part k writes ``a`` or ``b`` alternately and part k+1 reads it: two
ping-pong buffers serve any number of stages, because part k+1 may overwrite what
part k-1 wrote once part k has consumed it, and the stream orders every launch.
Every context of every program is bound to its buffers once, at open; switching
sub-networks binds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adn_edge.backends.tensorrt.engines import check_engine_source, choose_precision, engine_for, pick_precision
from adn_edge.backends.tensorrt.options import sample_dims
from adn_edge.backends.tensorrt.units import segment_what
from adn_edge.errors import AdnError
from adn_edge.modeldir.manifest import SEGMENT_KINDS, running_segments
from adn_edge.modeldir.names import segment_key

INPUT, LOGITS, PING, PONG = "input", "logits", "a", "b"


@dataclass(frozen=True)
class Link:
    """One engine of a program: its manifest record, tensor names and per-sample shapes."""

    key: str
    """``1010`` (a whole sub-network) or ``seg2_skip`` (one segment form)."""
    record: Mapping[str, Any]
    input_name: str
    output_name: str
    input_dims: tuple[int, ...]
    """Shape of one sample of the input (the batch dimension left out)."""
    output_dims: tuple[int, ...]
    source: str
    """Buffer the engine reads: ``input``, ``a`` or ``b``."""
    target: str
    """Buffer the engine writes: ``logits``, ``a`` or ``b``."""


@dataclass(frozen=True)
class Layout:
    """Every link to load, the program (link keys in order) of every code, and the
    per-sample size of every buffer in float32 elements."""

    precision: str
    links: dict[str, Link]
    programs: dict[str, tuple[str, ...]]
    buffer_elements: dict[str, int]

    def buffer_bytes(self, name: str, max_batch: int) -> int:
        return int(max_batch * self.buffer_elements[name] * 4)

    def _ends(self) -> tuple[Link, Link]:
        program = next(iter(self.programs.values()))  # every program has the same two ends
        return self.links[program[0]], self.links[program[-1]]

    @property
    def input_dims(self) -> tuple[int, ...]:
        return self._ends()[0].input_dims

    @property
    def output_dims(self) -> tuple[int, ...]:
        return self._ends()[1].output_dims

    @property
    def input_name(self) -> str:
        return self._ends()[0].input_name

    @property
    def output_name(self) -> str:
        return self._ends()[1].output_name


def monolithic_layout(manifest: Mapping[str, Any], codes: Sequence[str], precision: str | None) -> Layout:
    """One engine per code, reading ``input`` and writing ``logits``."""
    if not codes:
        raise AdnError("No sub-network was asked for.")
    p = choose_precision(manifest, codes, precision)
    spec, out = manifest["input"], manifest.get("output") or {}
    in_dims = sample_dims(spec.get("shape"), "the input")
    out_dims = (int(manifest["num_classes"]),)
    in_name, out_name = str(spec.get("name") or "input"), str(out.get("name") or "logits")
    links = {code: Link(code, engine_for(manifest, code, p), in_name, out_name, in_dims, out_dims, INPUT, LOGITS)
             for code in codes}
    for code, link in links.items():
        check_engine_source(link.record, manifest["subnets"][code].get("files") or {}, f"sub-network {code}")
    return Layout(p, links, {code: (code,) for code in codes},
                  {INPUT: math.prod(in_dims), LOGITS: math.prod(out_dims)})


def segmented_layout(manifest: Mapping[str, Any], codes: Sequence[str], precision: str | None) -> Layout:
    """The 2*S segment engines; code ``c`` runs part k in form ``c[k]`` for every k."""
    parts = running_segments(dict(manifest))["parts"]
    count = len(parts)
    if not codes:
        raise AdnError("No sub-network was asked for.")
    bad = [c for c in codes if len(c) != count or set(c) - set(SEGMENT_KINDS)]
    if bad:
        raise AdnError(f"Codes {', '.join(bad)} do not have one 0/1 flag per segment ({count}).")
    tables = {segment_key(k, kind): (part.get("engines") or {}).get(kind) or {}
              for k, part in enumerate(parts) for kind in SEGMENT_KINDS.values()}
    p = pick_precision({segment_what(key): t for key, t in tables.items()}, precision, "",
                       lambda p, _first: f"`adn-edge build DIR --segments --precision {p}`")
    links: dict[str, Link] = {}
    elements = {PING: 0, PONG: 0}
    prev_out: tuple[int, ...] | None = None
    for k, part in enumerate(parts):
        in_dims = sample_dims(part["input_shape"], f"segment {k}'s input")
        out_dims = sample_dims(part["output_shape"], f"segment {k}'s output")
        source = INPUT if k == 0 else (PING if k % 2 == 1 else PONG)
        target = LOGITS if k == count - 1 else (PING if k % 2 == 0 else PONG)
        if k == 0:
            elements[INPUT] = math.prod(in_dims)
        if k == count - 1:
            elements[LOGITS] = math.prod(out_dims)
        else:
            elements[target] = max(elements[target], math.prod(out_dims))
        if prev_out is not None and in_dims != prev_out:
            raise AdnError(f"Segment {k} reads {list(in_dims)} but segment {k - 1} writes {list(prev_out)}; the "
                           "segments record is damaged.", "Re-export the segments.")
        prev_out = out_dims
        for kind in SEGMENT_KINDS.values():
            key = segment_key(k, kind)
            graphs = {graph: (part.get(group) or {}).get(kind)
                      for graph, group in (("onnx", "files"), ("onnx_fp16", "files_fp16"), ("onnx_int8", "files_int8"))}
            check_engine_source(tables[key][p], graphs, segment_what(key))
            links[key] = Link(key, tables[key][p], str(part["input"]), str(part["output"]), in_dims, out_dims,
                              source, target)
    programs = {code: tuple(segment_key(k, SEGMENT_KINDS[flag]) for k, flag in enumerate(code)) for code in codes}
    return Layout(p, links, programs, {k: v for k, v in elements.items() if v})
