"""``manifest.json``: the one index of a model directory (docs/model-directory.md).

Export creates it, build adds engines to it, eval and bench add results beside it,
and the runtime trusts nothing that it does not list (every file is checked against
its sha256 on open). It is plain JSON, read without torch, and always written
atomically.

Layout (schema 1)::

    {"schema": 1, "adn_edge_version": "0.1.0", "kind": "adn-edge-model-dir",
     "arch": "resnet50", "num_stages": 4, "num_classes": 1000,
     "input": {"name": "input", "layout": "NCHW", "dtype": "float32",
               "shape": [null, 3, 224, 224], "mean": [...], "std": [...]},
     "output": {"name": "logits", "dtype": "float32"},
     "source": {"path": ..., "sha256": ..., "weights": "model_ema" | "model" | ...},
     "opset": 17,
     "subnets": {
       "1010": {"code": "1010", "skip_cfg": "FTFT", "gmacs": 3.43, "params": 20534312,
                "files": {"onnx": {"path": "resnet50_1010.onnx", "sha256": ...},
                          "onnx_fp16": {...}},
                "parity": {"onnx": {"rel_err": 1e-7, "max_abs_err": ..., "tolerance": 1e-4,
                                    "samples": 4}, "onnx_fp16": {...}},
                "engines": {"fp16": {"path": ..., "sha256": ..., "precision": "fp16",
                                      "precision_observed": {...}, "tensorrt_version": ...,
                                      "gpu": ..., "compute_capability": "8.7",
                                      "build_seconds": ..., "options": {...}}}}}}

File keys under ``files``: ``onnx`` (float32 graph), ``onnx_fp16`` (float16 weights,
float32 I/O), ``onnx_int8`` (Q/DQ graph). Engines are keyed by precision.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from adn_edge import __version__
from adn_edge.errors import AdnError
from adn_edge.fileio import read_json, sha256_file, write_json

SCHEMA = 1
FILENAME = "manifest.json"
KIND = "adn-edge-model-dir"


def path_in(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / FILENAME


def new(
    arch: str,
    num_stages: int,
    num_classes: int,
    input_shape: list[int | None],
    mean: list[float],
    std: list[float],
    source: dict[str, Any],
    opset: int,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "adn_edge_version": __version__,
        "kind": KIND,
        "arch": arch,
        "num_stages": num_stages,
        "num_classes": num_classes,
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32", "shape": input_shape,
                  "mean": list(mean), "std": list(std)},
        "output": {"name": "logits", "dtype": "float32"},
        "source": source,
        "opset": opset,
        "subnets": {},
    }


def load(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a model directory's manifest (clear errors, never a KeyError)."""
    directory = Path(directory)
    if not directory.exists():
        raise AdnError(f"The model directory {str(directory)!r} does not exist.",
                       "Create it with `adn-edge export CHECKPOINT --arch ARCH --out DIR`.")
    if not directory.is_dir():
        raise AdnError(f"{str(directory)!r} is not a model directory (it is a file).",
                       "Pass the directory that `adn-edge export` wrote (it holds manifest.json).")
    path = path_in(directory)
    if not path.exists():
        raise AdnError(f"{str(directory)!r} has no {FILENAME}, so it is not an adn-edge model directory.",
                       "Create one with `adn-edge export CHECKPOINT --arch ARCH --out DIR`.")
    data = read_json(path, "manifest")
    validate(data, path)
    return data


def validate(data: Any, where: str | os.PathLike[str] = FILENAME) -> None:
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise AdnError(f"{str(where)!r} is not an adn-edge manifest.")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise AdnError(
            f"{str(where)!r} has manifest schema {schema!r}, but this adn-edge "
            f"({__version__}) reads schema {SCHEMA}.",
            "Re-export the model with this version of adn-edge.",
        )
    for key in ("arch", "num_stages", "num_classes", "input", "output", "subnets"):
        if key not in data:
            raise AdnError(f"{str(where)!r} lacks the field {key!r}; it is damaged.",
                           "Re-export the model directory.")


def save(directory: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    validate(data)
    data["subnets"] = dict(sorted(data["subnets"].items(), key=lambda kv: kv[0], reverse=True))
    path = path_in(directory)
    write_json(path, data)
    return path


def file_record(directory: str | os.PathLike[str], name: str) -> dict[str, Any]:
    p = Path(directory) / name
    return {"path": name, "sha256": sha256_file(p), "bytes": p.stat().st_size}


def subnet(data: dict[str, Any], code: str) -> dict[str, Any]:
    try:
        return data["subnets"][code]
    except KeyError:
        have = ", ".join(sorted(data["subnets"], reverse=True)) or "none"
        raise AdnError(f"Sub-network {code} is not in this model directory (it holds: {have}).",
                       f"Export it with `adn-edge export ... --subnet {code}`.") from None


def resolve_codes(data: dict[str, Any], subnets: str | Iterable[str] | None,
                  present: dict[str, Any] | None = None) -> list[str]:
    """The canonical codes a command should work on, in a model directory.

    ``None``/``all`` = every sub-network the directory holds (``present``, default its
    ``subnets``), super-net first, then by descending GMACs; explicit codes, in any
    accepted spelling, must be present (the error names what is).
    """
    from adn_edge import subnet as subnet_mod

    present = data["subnets"] if present is None else present
    if not present:
        raise AdnError(f"The model directory lists no exported sub-network ({data['arch']}).",
                       "Export some with `adn-edge export CHECKPOINT --arch ARCH --subnet all --out DIR`.")
    codes = subnet_mod.expand(subnets, int(data["num_stages"]), str(data["arch"]),
                              cost=lambda c: float((present.get(c) or {}).get("gmacs") or 0.0), available=present)
    for code in codes:
        if code not in present:
            subnet({"subnets": present}, code)  # raises: names what the directory holds
    if not codes:
        raise AdnError("No sub-network was given.", "Use e.g. --subnet all.")
    return codes


SEGMENT_KINDS = {"1": "full", "0": "skip"}
"""A segment's two forms, by the code flag each stands for: part k of code ``c`` is
``segments.parts[k].files[SEGMENT_KINDS[c[k]]]``."""


def segments_record(data: dict[str, Any], purpose: str, otherwise: str) -> dict[str, Any]:
    """The manifest's ``segments`` record (``adn-edge export --segments``), checked once
    for every reader; ``purpose`` and ``otherwise`` finish the error's two sentences
    (what cannot be done without it, and the alternative)."""
    seg = data.get("segments")
    if not isinstance(seg, dict) or not seg.get("parts"):
        raise AdnError(f"This model directory has no segment graphs{purpose}.",
                       f"Export them with `adn-edge export CHECKPOINT --segments --out DIR`{otherwise}.")
    if seg.get("schema") != 1 or len(seg["parts"]) != data.get("num_stages"):
        raise AdnError(f"The manifest's segments record (schema {seg.get('schema')!r}, {len(seg['parts'])} parts) "
                       f"does not fit this adn-edge (schema 1, one part per stage: {data.get('num_stages')}).",
                       "Re-export the segments with this version of adn-edge.")
    return seg


def verify_file(directory: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Check that a listed file exists and matches its sha256; return its path."""
    p = Path(directory) / record["path"]
    if not p.exists():
        raise AdnError(f"{record['path']} is listed in {FILENAME} but missing from {str(directory)!r}.",
                       "Re-export (or re-build) the model directory.")
    digest = sha256_file(p)
    if digest != record["sha256"]:
        raise AdnError(
            f"{record['path']} in {str(directory)!r} does not match the sha256 recorded in {FILENAME} "
            "(it was modified or truncated after export).",
            "Re-export (or re-build) it; adn-edge refuses to run a file it cannot verify.")
    return p


def read_verified(directory: str | Path, record: dict[str, Any]) -> bytes:
    """The bytes of a manifest-listed file, checked against its sha256 as they are read.

    Hashing the very bytes that are then handed to the inference library (rather than
    hashing the file and re-reading it) leaves no window in which the file could
    change between the check and the load, and reads each artifact once.
    """
    p = Path(directory) / str(record["path"])
    try:
        data: bytes = p.read_bytes()
    except FileNotFoundError:
        raise AdnError(f"{record['path']} is listed in {FILENAME} but missing from {str(directory)!r}.",
                       "Re-export (or re-build) the model directory.") from None
    except OSError as exc:
        raise AdnError(f"{record['path']} in {str(directory)!r} cannot be read: {exc.strerror}.") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise AdnError(
            f"{record['path']} in {str(directory)!r} does not match the sha256 recorded in {FILENAME} "
            "(it was modified or truncated after export).",
            "Re-export (or re-build) it; adn-edge refuses to run a file it cannot verify.")
    return data
