"""What precision did TensorRT really choose? Read it off the engine inspector's JSON.

Asking for FP16 only *allows* FP16 kernels: on a GPU without fast FP16, or when every
FP16 tactic loses the timing race, TensorRT quietly builds an FP32 engine. A
benchmark of such an engine labelled "fp16" would be a lie, so every build is
inspected (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``
of an engine built with ``ProfilingVerbosity.DETAILED``) and the per-layer output
precisions are summarised here, in plain Python, testable without a GPU.

TensorRT 10 writes, per layer, ``{"Name", "LayerType", "Inputs": [...], "Outputs":
[{"Name", "Dimensions", "Format/Datatype": "Row major linear FP16 format"}], ...}``
under ``"Layers"`` (with ``"Bindings"`` beside it). TensorRT 11 splits the tensor
description into ``"DataType"`` and ``"Format"`` and lists ``"I/O Tensors"``; both are
read. Some 10.x releases print bare data types (``"Half"``, ``"Float"``, ``"Int8"``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adn_edge.errors import BuildFailure

FP32, FP16, BF16, INT8, FP8, INT32, INT64, BOOL, UINT8, UNKNOWN = (
    "FP32", "FP16", "BF16", "INT8", "FP8", "INT32", "INT64", "BOOL", "UINT8", "unknown")
REDUCED = frozenset({FP16, BF16, INT8, FP8})

BOOKKEEPING_LAYER_TYPES = frozenset({
    "Reformat", "NoOp", "Shuffle", "Constant", "Identity", "Cast", "Slice", "Concatenation", "Shape",
    "Gather", "Assertion", "Condition", "Fill",
})
"""Layers that move or relabel data instead of computing: their output type follows
their neighbours (or the float32 I/O) and says nothing about the compute precision."""

# Order matters: "bfloat16" contains "float", "int8" must not match "uint8".
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (BF16, re.compile(r"\bb(?:f|float)16\b|\bbfloat16\b|\bbf16\b", re.I)),
    (FP8, re.compile(r"\bfp8\b|\bfloat8|\be4m3\b|\be5m2\b", re.I)),
    (UINT8, re.compile(r"\buint8\b", re.I)),
    (INT8, re.compile(r"\bint8\b|\bi8\b", re.I)),
    (FP16, re.compile(r"\bfp16\b|\bhalf\b|\bfloat16\b|\bf16\b", re.I)),
    (INT32, re.compile(r"\bint32\b", re.I)),
    (INT64, re.compile(r"\bint64\b", re.I)),
    (BOOL, re.compile(r"\bbool(?:ean)?\b", re.I)),
    (FP32, re.compile(r"\bfp32\b|\bfloat32\b|\bfloat\b|\bf32\b", re.I)),
)


class PrecisionMismatch(BuildFailure):
    """The engine does not have the precision that was asked for (exit 1): the build
    succeeded, but publishing it under that name would mislead every benchmark."""


def tensor_precision(tensor: Any) -> str:
    """Data type of one tensor entry of the inspector JSON (``unknown`` if not stated)."""
    if not isinstance(tensor, Mapping):
        return UNKNOWN
    for key in ("DataType", "Format/Datatype", "Datatype", "Format"):
        text = tensor.get(key)
        if isinstance(text, str) and text:
            for name, pattern in _PATTERNS:
                if pattern.search(text):
                    return name
    return UNKNOWN


@dataclass(frozen=True)
class LayerInfo:
    name: str
    layer_type: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]

    @property
    def bookkeeping(self) -> bool:
        return self.layer_type in BOOKKEEPING_LAYER_TYPES

    @property
    def precision(self) -> str:
        """The layer's precision: that of its first output whose type is known.

        Outputs, not inputs, because a layer that reads FP32 and writes FP16 ran its
        kernel for FP16 (TensorRT fuses the conversion into the kernel's epilogue).
        """
        for p in self.outputs:
            if p != UNKNOWN:
                return p
        for p in self.inputs:
            if p != UNKNOWN:
                return p
        return UNKNOWN


@dataclass(frozen=True)
class PrecisionSummary:
    layers: tuple[LayerInfo, ...]
    detailed: bool
    """False when the engine holds layer names only (built without DETAILED
    verbosity): then nothing can be said about precisions."""
    io_tensors: tuple[str, ...] = field(default=())

    @property
    def compute_layers(self) -> tuple[LayerInfo, ...]:
        return tuple(layer for layer in self.layers if not layer.bookkeeping)

    def counts(self) -> dict[str, int]:
        c = Counter(layer.precision for layer in self.compute_layers)
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    def reduced_fraction(self) -> float:
        known = [layer for layer in self.compute_layers if layer.precision != UNKNOWN]
        if not known:
            return 0.0
        return sum(layer.precision in REDUCED for layer in known) / len(known)

    def as_record(self) -> dict[str, Any]:
        """Compact form for ``manifest.json`` (``precision_observed``)."""
        return {
            "layers": len(self.layers),
            "compute_layers": len(self.compute_layers),
            "by_precision": self.counts(),
            "reduced_fraction": round(self.reduced_fraction(), 4),
            "detailed": self.detailed,
        }

    def label(self) -> str:
        return label(self.counts())


def label(counts: Mapping[str, int]) -> str:
    """One word for tables: ``fp16``, ``fp32``, ``int8``, or ``mixed(fp16 85%)``."""
    known = {k: int(v) for k, v in counts.items() if k != UNKNOWN and v}
    if not known:
        return "unknown"
    if len(known) == 1:
        return next(iter(known)).lower()
    top = max(known, key=lambda k: (known[k], k))
    return f"mixed({top.lower()} {100 * known[top] // sum(known.values())}%)"


def _tensor_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else []


def summarize(info: str | Mapping[str, Any]) -> PrecisionSummary:
    """Parse ``get_engine_information(LayerInformationFormat.JSON)`` output."""
    if isinstance(info, str):
        try:
            data: Any = json.loads(info)
        except json.JSONDecodeError as exc:
            raise BuildFailure(f"The engine inspector returned text that is not JSON ({exc}).") from None
    else:
        data = info
    if not isinstance(data, Mapping) or not isinstance(data.get("Layers"), Sequence):
        raise BuildFailure("The engine inspector's JSON has no 'Layers' list; this TensorRT's format is not "
                           "understood by adn-edge.")
    layers: list[LayerInfo] = []
    detailed = False
    for i, raw in enumerate(data["Layers"]):
        if isinstance(raw, str):  # LAYER_NAMES_ONLY verbosity
            layers.append(LayerInfo(raw, "", (), ()))
            continue
        if not isinstance(raw, Mapping):
            continue
        detailed = True
        layers.append(LayerInfo(
            name=str(raw.get("Name", f"layer {i}")),
            layer_type=str(raw.get("LayerType", "")),
            outputs=tuple(tensor_precision(t) for t in _tensor_list(raw.get("Outputs"))),
            inputs=tuple(tensor_precision(t) for t in _tensor_list(raw.get("Inputs"))),
        ))
    io: list[str] = []
    for t in _tensor_list(data.get("Bindings")) + _tensor_list(data.get("I/O Tensors")):
        if isinstance(t, str):
            io.append(t)
        elif isinstance(t, Mapping) and "Name" in t:
            io.append(str(t["Name"]))
    return PrecisionSummary(tuple(layers), detailed, tuple(io))


def verify(summary: PrecisionSummary, requested: str, what: str = "the engine") -> list[str]:
    """Raise :class:`PrecisionMismatch` when ``summary`` contradicts ``requested``.

    Returns warnings for partial results (e.g. only a third of the layers in FP16),
    which are legitimate (TensorRT keeps a layer in FP32 when that is faster or the
    layer has no FP16 kernel) but worth knowing about.
    """
    requested = requested.lower()
    warnings: list[str] = []
    if not summary.detailed:
        raise PrecisionMismatch(
            f"Cannot verify the precision of {what}: the inspector lists layer names only "
            "(the engine was not built with ProfilingVerbosity.DETAILED).")
    counts = summary.counts()
    known = {k: v for k, v in counts.items() if k != UNKNOWN}
    if not known:
        raise PrecisionMismatch(
            f"Cannot verify the precision of {what}: the inspector states no data type for any layer "
            f"({sum(counts.values())} compute layers).")
    total = sum(known.values())
    n16 = known.get(FP16, 0) + known.get(BF16, 0)
    n8 = known.get(INT8, 0) + known.get(FP8, 0)
    seen = ", ".join(f"{k} {v}" for k, v in known.items())
    if requested == "fp16" and n16 == 0:
        raise PrecisionMismatch(
            f"An FP16 build came out without any FP16 layer ({what}: {seen}). This GPU may lack fast FP16, "
            "or every FP16 kernel lost to FP32; the engine was not written, so nothing is labelled fp16 "
            "that is not.")
    if requested == "int8" and n8 == 0:
        raise PrecisionMismatch(
            f"An INT8 build came out without any INT8 layer ({what}: {seen}). Check the calibration data "
            "(or the Q/DQ nodes of the INT8 graph); the engine was not written.")
    if requested == "best" and n16 + n8 == 0:
        raise PrecisionMismatch(
            f"A 'best' (FP16+INT8) build came out all {seen} ({what}); the engine was not written.")
    if requested == "fp32" and n16 + n8 > 0:
        warnings.append(f"{what}: {n16 + n8} of {total} layers run in reduced precision although fp32 was asked "
                        "for (the graph itself carries float16 or Q/DQ types).")
    if requested in ("fp16", "int8", "best"):
        reduced = n16 + n8 if requested == "best" else (n16 if requested == "fp16" else n8)
        if reduced * 2 < total:
            warnings.append(f"{what}: only {reduced} of {total} compute layers run in {requested.upper()} "
                            f"({seen}).")
    return warnings
