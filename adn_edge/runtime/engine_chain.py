"""Which TensorRT engines run each sub-network, and which buffer each one reads and writes.

The TensorRT backend executes a sub-network as a *program*: an ordered list of
engines on one stream. Monolithically that is one engine per sub-network; in
segmented mode it is the S segment engines of the code's flags, part k's output
feeding part k+1. Deciding that (and sizing the device buffers between them) is
plain bookkeeping over the manifest, kept here so it is tested on machines without
a GPU; :mod:`~adn_edge.runtime.tensorrt_backend` only binds and launches.

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

from adn_edge.build.plan import (
    SEGMENT_FORMS, choose_precision, choose_segment_precision, engine_for, segment_engine_for, segment_key,
)
from adn_edge.errors import AdnError

INPUT, LOGITS, PING, PONG = "input", "logits", "a", "b"
FLAG_TO_KIND = {flag: kind for kind, flag in SEGMENT_FORMS}


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


def _dims(shape: Any, what: str) -> tuple[int, ...]:
    """Per-sample dims of a recorded shape: fixed positive sizes after the batch."""
    if not isinstance(shape, Sequence) or len(shape) < 2:
        raise AdnError(f"The manifest's shape {shape!r} of {what} is not a batched shape; it is damaged.",
                       "Re-export the model directory.")
    rest = shape[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in rest):
        raise AdnError(f"The manifest's shape {list(shape)!r} of {what} has unknown sizes besides the batch.",
                       "Re-export the model directory with a fixed input size.")
    return tuple(int(d) for d in rest)


def monolithic_layout(manifest: Mapping[str, Any], codes: Sequence[str], precision: str | None) -> Layout:
    """One engine per code, reading ``input`` and writing ``logits``."""
    if not codes:
        raise AdnError("No sub-network was asked for.")
    p = choose_precision(manifest, codes, precision)
    spec, out = manifest["input"], manifest.get("output") or {}
    in_dims = _dims(spec.get("shape"), "the input")
    out_dims = (int(manifest["num_classes"]),)
    in_name, out_name = str(spec.get("name") or "input"), str(out.get("name") or "logits")
    links = {code: Link(code, engine_for(manifest, code, p), in_name, out_name, in_dims, out_dims, INPUT, LOGITS)
             for code in codes}
    return Layout(p, links, {code: (code,) for code in codes},
                  {INPUT: math.prod(in_dims), LOGITS: math.prod(out_dims)})


def segmented_layout(manifest: Mapping[str, Any], codes: Sequence[str], precision: str | None) -> Layout:
    """The 2*S segment engines; code ``c`` runs part k in form ``c[k]`` for every k."""
    from adn_edge.runtime.segmented import segments_record

    seg = segments_record(dict(manifest))
    parts = seg["parts"]
    count = len(parts)
    if not codes:
        raise AdnError("No sub-network was asked for.")
    bad = [c for c in codes if len(c) != count or set(c) - set(FLAG_TO_KIND)]
    if bad:
        raise AdnError(f"Codes {', '.join(bad)} do not have one 0/1 flag per segment ({count}).")
    p = choose_segment_precision(manifest, precision)
    links: dict[str, Link] = {}
    elements = {PING: 0, PONG: 0}
    for k, part in enumerate(parts):
        in_dims = _dims(part["input_shape"], f"segment {k}'s input")
        out_dims = _dims(part["output_shape"], f"segment {k}'s output")
        source = INPUT if k == 0 else (PING if k % 2 == 1 else PONG)
        target = LOGITS if k == count - 1 else (PING if k % 2 == 0 else PONG)
        if k == 0:
            elements[INPUT] = math.prod(in_dims)
        if k == count - 1:
            elements[LOGITS] = math.prod(out_dims)
        else:
            elements[target] = max(elements[target], math.prod(out_dims))
        if k and in_dims != _dims(parts[k - 1]["output_shape"], f"segment {k - 1}'s output"):
            raise AdnError(f"Segment {k} reads {list(in_dims)} but segment {k - 1} writes "
                           f"{parts[k - 1]['output_shape'][1:]}; the segments record is damaged.",
                           "Re-export the segments.")
        for kind, _flag in SEGMENT_FORMS:
            key = segment_key(k, kind)
            links[key] = Link(key, segment_engine_for(manifest, key, p), str(part["input"]), str(part["output"]),
                              in_dims, out_dims, source, target)
    programs = {code: tuple(segment_key(k, FLAG_TO_KIND[flag]) for k, flag in enumerate(code)) for code in codes}
    return Layout(p, links, programs, {k: v for k, v in elements.items() if v})
