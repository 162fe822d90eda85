"""Schema 1 of ``manifest.json`` as a JSON Schema (docs/model-directory.md), and its validator.

Why a schema and not hand-written checks: a manifest is the one input that decides
which files the runtime reads and which names the tools write, so a damaged or
hostile one must be refused as a whole, by the field at fault, before anything
indexes into it. Before this, the loader checked six top-level keys and every reader
trusted the rest; a ``null`` where a record was expected surfaced as a ``TypeError``
deep in a backend. One declarative schema (checked by ``jsonschema``, a maintained
library) covers every field that export, segments export, quantize and build write,
and :func:`adn_edge.modeldir.manifest.validate` adds the rules a schema cannot say
(code lengths against ``num_stages``, paths confined to the directory).

How strict, and where additive:

* Required fields are those every writer writes (``manifest.new``,
  ``manifest.file_record``, the engine records of ``adn-edge build``); their types
  are strict: ``integer`` is a JSON integer (not ``4.0``, not ``true``), ``number``
  is finite (Python's ``json`` reads ``NaN`` and ``Infinity``, which are not JSON),
  a sha256 is 64 lowercase hex characters, sizes and counts are non-negative.
* Objects accept fields this schema does not name (no ``additionalProperties:
  false`` anywhere): schema 1 grows by adding fields, and an older reader must keep
  reading a newer writer's manifest. Unknown fields are never interpreted. Keys that
  readers use as values are constrained (``propertyNames``): sub-network codes,
  file and engine keys, segment forms.
* Paths of files the runtime reads (``files``, ``files_fp16``, ``files_int8``, ``engines`` records)
  are non-empty strings here. That they are relative, normalised and inside the
  directory is the one path rule of :mod:`adn_edge.modeldir.manifest`:
  ``relpath_problem`` on validation, ``resolve_in`` (where the path leads, symlinks
  included) on reading. Other path-like fields (``source.path``: the checkpoint,
  anywhere; an engine's ``timing_cache``, absolute when outside the directory;
  ``quantization.cache.path``) are provenance, never opened through the manifest.

``x-expected`` (an annotation keyword, ignored by validation) words what a value must
be, for the error message, where the keyword alone would not say it well.

``jsonschema`` is imported by :func:`validator` only: ``import adn_edge.runtime``
stays as light as before (jsonschema takes 50-150 ms to import here, paid at the
first manifest read instead).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from adn_edge.errors import AdnError
from adn_edge.modeldir.preprocess import INTERPOLATIONS

MAX_STAGES = 8
"""Upper bound of ``num_stages``: the largest architecture has 5, and readers enumerate
the 2^S codes (``all``), so an absurd S must be refused before anything counts to it."""

ARCH_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""``arch`` starts every file name the tools write (``<arch>_<code>.onnx``), so it is an
identifier: no separator, no dot, nothing that could leave the directory."""

MAX_DIM = 1 << 20
"""Bound of a shape dimension and of ``num_classes``: generous, but small enough that an
absurd value is refused as damage instead of becoming an allocation."""

_SHA256: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{64}$",
                           "x-expected": "a sha256, 64 lowercase hex characters"}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_POSITIVE: dict[str, Any] = {"type": "integer", "minimum": 1}
_NUMBER: dict[str, Any] = {"type": "number"}
_NON_NEGATIVE: dict[str, Any] = {"type": "number", "minimum": 0}
_TEXT: dict[str, Any] = {"type": "string"}
_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 256}
_CODE_KEYS: dict[str, Any] = {"pattern": f"^[01]{{1,{MAX_STAGES}}}$",
                              "x-expected": "a canonical sub-network code (0/1 characters, one per stage)"}
_KEY: dict[str, Any] = {"pattern": "^[a-z0-9_]{1,32}$",
                        "x-expected": "a short lower-case key (letters, digits, _)"}

_DIM: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_DIM}
_SHAPE: dict[str, Any] = {
    "description": "a tensor shape; the first (batch) dimension is null when dynamic",
    "type": "array", "minItems": 1, "maxItems": 8,
    "prefixItems": [{"type": ["integer", "null"], "minimum": 1, "maximum": MAX_DIM}],
    "items": _DIM,
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://adn-edge/manifest/schema-1.json",
    "title": "adn-edge model directory manifest, schema 1",
    "description": "docs/model-directory.md; objects are open to added fields (schema 1 grows additively)",
    "type": "object",
    "required": ["schema", "adn_edge_version", "kind", "arch", "num_stages", "num_classes", "input", "output",
                 "source", "opset", "subnets"],
    "properties": {
        "schema": {"const": 1},
        "kind": {"const": "adn-edge-model-dir"},
        "adn_edge_version": _NAME,
        "arch": {"type": "string", "pattern": ARCH_PATTERN,
                 "x-expected": "a registry name (a lower-case letter, then up to 63 of a-z, 0-9, _)"},
        "num_stages": {"type": "integer", "minimum": 1, "maximum": MAX_STAGES},
        "num_classes": {"type": "integer", "minimum": 1, "maximum": MAX_DIM},
        "input": {"$ref": "#/$defs/input"},
        "output": {
            "type": "object", "required": ["name", "dtype"],
            "properties": {"name": _NAME, "dtype": {"const": "float32"}},
        },
        "source": {
            "description": "the checkpoint the graphs came from, as the exporting caller described it (library "
                           "callers pass their own dict, so no field is required): provenance, the path may lie "
                           "anywhere or be null for an in-memory model, and sha256 is then '' or a word such as "
                           "'random-init'",
            "type": "object",
            "properties": {"path": {"type": ["string", "null"]}, "sha256": _TEXT, "container": _TEXT,
                           "weights": _TEXT},
        },
        "opset": {"type": "integer", "minimum": 1, "maximum": 1000},
        "recalibration": {
            "type": ["object", "null"],
            "properties": {"data": {"type": ["string", "null"]}, "samples": _COUNT, "note": _TEXT},
        },
        "subnets": {
            "type": "object",
            "propertyNames": _CODE_KEYS,
            "additionalProperties": {"$ref": "#/$defs/subnet"},
        },
        "segments": {"$ref": "#/$defs/segments"},
    },
    "$defs": {
        "file": {
            "description": "a file of the directory; path relative to it (confinement: manifest.resolve_in)",
            "type": "object", "required": ["path", "sha256", "bytes"],
            "properties": {"path": {"type": "string", "minLength": 1, "maxLength": 4096},
                           "sha256": _SHA256, "bytes": _COUNT},
        },
        "files": {"type": "object", "propertyNames": _KEY, "additionalProperties": {"$ref": "#/$defs/file"}},
        "engine": {
            "description": "a TensorRT plan (backends/tensorrt/plan.py engine_record)",
            "allOf": [{"$ref": "#/$defs/file"}],
            "required": ["precision", "tensorrt_version", "gpu", "compute_capability"],
            "properties": {
                "precision": _NAME, "tensorrt_version": _NAME, "gpu": _NAME, "compute_capability": _NAME,
                "sm_count": {"type": ["integer", "null"], "minimum": 1},
                "gpu_memory_mib": {"type": ["integer", "null"], "minimum": 1},
                "precision_observed": {"type": "object"},
                "build_seconds": _NON_NEGATIVE, "built_at": _TEXT,
                "options": {
                    "type": "object",
                    "properties": {"precision": _NAME, "min_batch": _POSITIVE, "opt_batch": _POSITIVE,
                                   "max_batch": _POSITIVE, "workspace_mb": _POSITIVE, "opt_level": _COUNT,
                                   "calib_batch": _POSITIVE, "tf32": {"type": "boolean"}},
                },
                "source": {
                    "type": "object",
                    "properties": {"key": _TEXT, "path": {"type": ["string", "null"]},
                                   "sha256": {"type": ["string", "null"]}, "strongly_typed": {"type": "boolean"}},
                },
                "timing_cache": {"type": ["string", "null"]},
                "calibration": {"type": ["object", "null"]},
            },
        },
        "engines": {"type": "object", "propertyNames": _KEY, "additionalProperties": {"$ref": "#/$defs/engine"}},
        "input": {
            "type": "object", "required": ["name", "layout", "dtype", "shape", "mean", "std"],
            "properties": {
                "name": _NAME,
                "layout": {"const": "NCHW"},
                "dtype": {"const": "float32"},
                "shape": {**_SHAPE, "minItems": 4, "maxItems": 4},
                "mean": {"type": "array", "minItems": 3, "maxItems": 3, "items": _NUMBER},
                "std": {"type": "array", "minItems": 3, "maxItems": 3,
                        "items": {"type": "number", "exclusiveMinimum": 0}},
                "resize": {"type": "integer", "minimum": 1, "maximum": MAX_DIM},
                "interpolation": {"enum": list(INTERPOLATIONS)},
                "crop_pct": {"type": "number", "exclusiveMinimum": 0},
                "scale": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "parity": {
            "type": "object",
            "properties": {"rel_err": _NON_NEGATIVE, "max_abs_err": _NON_NEGATIVE, "tolerance": _NON_NEGATIVE,
                           "samples": _COUNT, "runtime": _TEXT, "reference": _TEXT, "data": _TEXT},
        },
        "quantization": {
            "description": "written by adn-edge quantize (quantize/runner.py)",
            "type": "object",
            "properties": {
                "settings": {"type": "object"}, "calibration": {"type": "object"}, "method": {"type": "object"},
                "library": {"type": "object"}, "qdq": {"type": "object"},
                "cache": {"type": "object", "required": ["path", "key", "sha256"],
                          "properties": {"path": _NAME, "key": _TEXT, "sha256": _SHA256}},
                "accuracy": {"type": ["object", "null"]},
            },
        },
        "subnet": {
            "description": "one exported sub-network (export/exporter.py); key = its canonical code",
            "type": "object", "required": ["code", "skip_cfg", "gmacs", "params", "files"],
            "properties": {
                "code": {"type": "string"},
                "skip_cfg": {"type": "string"},
                "gmacs": _NON_NEGATIVE,
                "params": _COUNT,
                "files": {"$ref": "#/$defs/files"},
                "parity": {"type": "object", "additionalProperties": {"$ref": "#/$defs/parity"}},
                "graph": {"type": "object", "properties": {"nodes": _COUNT, "initializers": _COUNT}},
                "recalibrated": {"type": "boolean"},
                "quantization": {"$ref": "#/$defs/quantization"},
                "engines": {"$ref": "#/$defs/engines"},
                "seconds": _NON_NEGATIVE,
            },
        },
        "pair": {
            "description": "a segment's two forms, stage run (full) and skipped (skip)",
            "type": "object", "required": ["full", "skip"],
            "properties": {"full": {"$ref": "#/$defs/file"}, "skip": {"$ref": "#/$defs/file"}},
        },
        "part": {
            "type": "object",
            "required": ["index", "input", "output", "input_shape", "output_shape", "files"],
            "properties": {
                "index": _COUNT, "input": _NAME, "output": _NAME,
                "input_shape": _SHAPE, "output_shape": _SHAPE,
                "files": {"$ref": "#/$defs/pair"},
                "files_fp16": {"$ref": "#/$defs/pair"},
                "files_int8": {"$ref": "#/$defs/pair"},
                "quantization": {
                    "description": "adn-edge quantize --segments (quantize/segments.py): per form",
                    "type": "object", "propertyNames": {"enum": ["full", "skip"]},
                    "additionalProperties": {"$ref": "#/$defs/quantization"},
                },
                "engines": {
                    "type": "object", "propertyNames": {"enum": ["full", "skip"]},
                    "additionalProperties": {"$ref": "#/$defs/engines"},
                },
            },
        },
        "segment_parity": {
            "type": "object",
            "properties": {"rel_err_max": _NON_NEGATIVE, "tolerance": _NON_NEGATIVE, "samples": _COUNT,
                           "runtime": _TEXT, "reference": _TEXT, "data": _TEXT},
        },
        "segments": {
            "description": "export --segments (export/segments.py): part k of every code, full and skipped",
            "type": "object", "required": ["schema", "count", "parts"],
            "properties": {
                "schema": {"const": 1},
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_STAGES},
                "opset": {"type": "integer", "minimum": 1, "maximum": 1000},
                "parts": {"type": "array", "minItems": 1, "maxItems": MAX_STAGES, "items": {"$ref": "#/$defs/part"}},
                "parity": {"$ref": "#/$defs/segment_parity"},
                "parity_fp16": {"$ref": "#/$defs/segment_parity"},
                "parity_int8": {"$ref": "#/$defs/segment_parity"},
                "quantization": {"$ref": "#/$defs/quantization"},
                "subnets": {
                    "type": "object", "propertyNames": _CODE_KEYS,
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"gmacs": _NON_NEGATIVE, "params": _COUNT, "rel_err": _NON_NEGATIVE,
                                       "rel_err_fp16": _NON_NEGATIVE, "rel_err_int8": _NON_NEGATIVE},
                    },
                },
                "weights": {"type": "object", "properties": {"bytes_unique": _COUNT, "bytes_total": _COUNT}},
                "corrections": {"$ref": "#/$defs/segment_corrections"},
            },
        },
        "segment_corrections": {
            "description": "export --segments --recalibrate (export/corrections.py): per-prefix BatchNorm "
                           "corrections fed to the segment graphs as inputs, in one .npz (no pickle)",
            "type": "object", "required": ["file", "reference"],
            "properties": {
                "file": {"$ref": "#/$defs/file"},
                "data": {"type": ["string", "null"]}, "samples": _COUNT,
                "reference": {"enum": ["checkpoint", "joint"]},
                "threshold": {"oneOf": [_NON_NEGATIVE, {"type": "null"}]},
                "convs": {"type": "object", "properties": {"affine": _COUNT, "shift": _COUNT, "none": _COUNT}},
                "inputs": _COUNT,
                "deviation": {"type": "object", "properties": {"scale_max": _NON_NEGATIVE,
                                                               "shift_max": _NON_NEGATIVE}},
            },
        },
    },
}


def _is_integer(_checker: Any, value: Any) -> bool:
    """A JSON integer: Python ``int``, not ``bool`` and not an integral float (``4.0``
    would reach ``format(i, f"0{4.0}b")`` and file names as ``4.0``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker: Any, value: Any) -> bool:
    """A finite number: NaN and infinities are not JSON, only what Python's reader accepts."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


@lru_cache(maxsize=1)
def validator() -> Any:
    """The compiled Draft 2020-12 validator of :data:`SCHEMA`, with strict integer and
    finite-number types; built once per process."""
    try:
        import jsonschema
    except ImportError:
        raise AdnError("Reading a model directory needs the jsonschema package, which is not installed.",
                       "pip install 'jsonschema>=4'.") from None
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    cls = jsonschema.validators.extend(base, type_checker=checker)
    return cls(SCHEMA)


def _where(path: Any) -> str:
    """A JSON location as a reader writes it: ``subnets.1010.files.onnx.sha256``, ``segments.parts[2].files``."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out or "the top level"


_TYPE_WORDS = {"integer": "an integer", "number": "a finite number", "string": "a string", "object": "an object",
               "array": "a list", "boolean": "true or false", "null": "null"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: Any) -> str:
    """One jsonschema error as ``<field> <what it must be> (got <value>)``."""
    kind, expected, value = error.validator, error.validator_value, error.instance
    where = _where(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if kind == "required":  # problems() gathers these per object
        missing = [k for k in expected if not (isinstance(value, dict) and k in value)]
        return f"{where} lacks the field(s) {', '.join(repr(k) for k in missing)}"
    if "propertyNames" in error.absolute_schema_path:  # the key itself is wrong, not its value
        return f"{where} has the key {_short(value)}, which is not {schema.get('x-expected', 'an accepted key')}"
    if kind == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"{where} must be {words} (got {_short(value)})"
    if kind == "pattern" and "x-expected" in schema:
        return f"{where} must be {schema['x-expected']} (got {_short(value)})"
    if kind in ("const", "enum"):
        choices = [expected] if kind == "const" else list(expected)
        return f"{where} must be {' or '.join(repr(c) for c in choices)} (got {_short(value)})"
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return f"{where} must be {bounds[kind]} {expected} (got {_short(value)})"
    if kind in ("minItems", "maxItems"):
        return f"{where} must have {'at least' if kind == 'minItems' else 'at most'} {expected} item(s) " \
               f"(it has {len(value)})"
    if kind in ("minLength", "maxLength"):
        return f"{where} must be {'at least' if kind == 'minLength' else 'at most'} {expected} character(s) long"
    return f"{where}: {error.message}"


def problems(data: Any) -> list[str]:
    """Every schema violation of ``data``, worded by :func:`describe`, ordered by field
    (so the message is the same on every run), each said once; the missing fields of
    one object are named in one entry (several subschemas may each require some)."""
    errors = sorted(validator().iter_errors(data), key=lambda e: [str(k) for k in e.absolute_path])
    out: list[str | list[str]] = []
    missing: dict[str, list[str]] = {}
    for e in errors:
        if e.validator != "required":
            out.append(describe(e))
            continue
        where = _where(e.absolute_path)
        if where not in missing:
            missing[where] = []
            out.append([where])
        have = e.instance if isinstance(e.instance, dict) else {}
        missing[where] += [k for k in e.validator_value if k not in have and k not in missing[where]]
    said = [f"{m[0]} lacks the field(s) {', '.join(repr(k) for k in missing[m[0]])}" if isinstance(m, list) else m
            for m in out]
    return list(dict.fromkeys(said))
