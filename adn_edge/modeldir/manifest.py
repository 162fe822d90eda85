"""``manifest.json``: the one index of a model directory (docs/model-directory.md).

Export creates it, build adds engines to it, eval and bench add results beside it,
and the runtime trusts nothing that it does not list (every file is checked against
its sha256 on open). It is plain JSON, read without torch, and always written
atomically.

A manifest is data from wherever the directory came from, so it is validated in
full on every load and save (:func:`validate`: the JSON Schema of
:mod:`adn_edge.modeldir.schema`, then codes, segments and paths), and every file it
lists is reached through one function, :func:`resolve_in`: relative, normalised,
inside the directory once symlinks are resolved, and a regular file. Names the tools
build from its fields (``<arch>_<code>...``) are safe because ``arch`` is an
identifier and codes are canonical.

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
Segment parts list their graphs under ``files``, ``files_fp16`` and ``files_int8``
(:data:`SEGMENT_FILE_KEYS`), each a ``{"full", "skip"}`` pair of file records.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PureWindowsPath
from typing import Any, BinaryIO, cast

from adn_edge import __version__
from adn_edge import subnet as subnet_mod
from adn_edge.errors import AdnError
from adn_edge.fileio import open_regular, read_json, write_json
from adn_edge.modeldir import schema as schema_mod

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
    try:
        data = read_json(path, "manifest")
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, nesting deeper than the parser
        raise AdnError(f"The manifest {str(path)!r} cannot be read as JSON ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:120]}); it is damaged or was edited by hand.",
                       "Re-export the model directory.") from None
    validate(data, path)
    return cast("dict[str, Any]", data)  # validate() vouched for it


def validate(data: Any, where: str | os.PathLike[str] = FILENAME) -> None:
    """Refuse a manifest that is not schema 1, as one :class:`AdnError` naming the fields at fault.

    Runs on every load and every save, so no reader indexes into a damaged manifest
    and no writer saves one. Three layers: the kind and schema number (a manifest of
    another version gets its own message), the JSON Schema of
    :mod:`adn_edge.modeldir.schema` (types, required fields, the ``arch`` identifier,
    the ``num_stages`` bound), then what a schema cannot say (:func:`_semantic_problems`:
    codes against ``num_stages``, segment parts against the stages, paths confined).
    """
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise AdnError(f"{str(where)!r} is not an adn-edge manifest.")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise AdnError(
            f"{str(where)!r} has manifest schema {schema!r}, but this adn-edge "
            f"({__version__}) reads schema {SCHEMA}.",
            "Re-export the model with this version of adn-edge.",
        )
    found = schema_mod.problems(data)
    if not found:  # the semantic rules index into what the schema has vouched for
        found = _semantic_problems(data)
    if found:
        shown = "; ".join(found[:3])
        more = f" ({len(found)} problems in all)" if len(found) > 3 else ""
        raise AdnError(f"{where}: {shown}{more}. The manifest is damaged or was edited by hand, and adn-edge "
                       "reads nothing from a model directory it cannot validate.",
                       "Re-export the model directory (`adn-edge export CHECKPOINT --arch ARCH --out DIR`).")


def _read_paths(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(JSON location, path) of every file record that a reader opens: graphs, engines,
    segment graphs and segment engines. Assumes ``data`` passed the schema."""
    for code, entry in data["subnets"].items():
        for key, rec in entry["files"].items():
            yield f"subnets.{code}.files.{key}.path", rec["path"]
        for key, rec in (entry.get("engines") or {}).items():
            yield f"subnets.{code}.engines.{key}.path", rec["path"]
    for k, part in enumerate((data.get("segments") or {}).get("parts") or []):
        for group in SEGMENT_FILE_KEYS.values():
            for kind, rec in (part.get(group) or {}).items():
                yield f"segments.parts[{k}].{group}.{kind}.path", rec["path"]
        for kind, by_precision in (part.get("engines") or {}).items():
            for key, rec in by_precision.items():
                yield f"segments.parts[{k}].engines.{kind}.{key}.path", rec["path"]
    corrections = (data.get("segments") or {}).get("corrections")
    if isinstance(corrections, dict):
        yield "segments.corrections.file.path", corrections["file"]["path"]


def _semantic_problems(data: dict[str, Any]) -> list[str]:
    """What JSON Schema cannot express: sub-network codes as long as ``num_stages`` (the
    key, the entry's ``code`` and ``skip_cfg`` agreeing), the segments record with one
    part per stage in order, and every read path relative and normalised
    (:func:`relpath_problem`; where it resolves is checked when it is read, :func:`resolve_in`)."""
    out: list[str] = []
    stages = data["num_stages"]
    for code, entry in data["subnets"].items():
        if len(code) != stages:
            out.append(f"subnets has the key {code!r}, but codes of this model have {stages} characters "
                       "(num_stages)")
            continue
        if entry["code"] != code:
            out.append(f"subnets.{code}.code is {entry['code']!r}, not its key {code!r}")
        if entry["skip_cfg"] != subnet_mod.to_skip_cfg(code):
            out.append(f"subnets.{code}.skip_cfg must be {subnet_mod.to_skip_cfg(code)!r} for code {code} "
                       f"(got {entry['skip_cfg']!r})")
    seg = data.get("segments")
    if seg is not None:
        parts = seg["parts"]
        if seg["count"] != stages or len(parts) != stages:
            out.append(f"segments has count {seg['count']} and {len(parts)} parts, but one part per stage "
                       f"({stages}, num_stages) is needed")
        out += [f"segments.parts[{k}].index must be {k} (got {part['index']})"
                for k, part in enumerate(parts) if part["index"] != k]
        out += [f"segments.subnets has the key {code!r}, but codes of this model have {stages} characters"
                for code in seg.get("subnets") or {} if len(code) != stages]
    for field, path in _read_paths(data):
        problem = relpath_problem(path)
        if problem:
            out.append(f"{field} {problem} (got {path!r})")
    return out


def save(directory: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    validate(data)
    data["subnets"] = dict(sorted(data["subnets"].items(), key=lambda kv: kv[0], reverse=True))
    path = path_in(directory)
    write_json(path, data)
    return path


def file_record(directory: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The manifest record of ``name``, a file just written into ``directory``: the name
    as given (relative), its sha256 and size, read through the same confinement and
    regular-file checks as every reader (:func:`resolve_in`)."""
    digest, size = _digest(resolve_in(directory, name, "path"), name, directory)
    return {"path": name, "sha256": digest, "bytes": size}


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

SEGMENT_FILE_KEYS = {"fp32": "files", "fp16": "files_fp16", "int8": "files_int8"}
"""A segment part's graphs by precision: float32 (``export --segments``), their float16
twins (``--fp16``) and the Q/DQ INT8 graphs of ``adn-edge quantize --segments``, each
key holding ``{"full": file record, "skip": file record}``."""


def stale_int8_segments(seg: dict[str, Any]) -> list[str]:
    """The segment forms whose INT8 graph was not quantised from the float32 graph the
    manifest lists now (``segments.parts[k].quantization[kind].settings.source_sha256``
    against ``files[kind].sha256``): a re-export keeps an earlier ``files_int8`` record,
    and an INT8 graph of other float32 weights must not run under these. Named as
    ``seg<k>_<kind>``; empty when every part has ``files_int8`` from its own graph."""
    stale = []
    for part in seg.get("parts") or []:
        quant = part.get("quantization") if isinstance(part.get("quantization"), dict) else {}
        for kind in SEGMENT_KINDS.values():
            if kind not in (part.get("files_int8") or {}):
                continue
            settings = (quant.get(kind) or {}).get("settings") if isinstance(quant.get(kind), dict) else None
            source = settings.get("source_sha256") if isinstance(settings, dict) else None
            if source != ((part.get("files") or {}).get(kind) or {}).get("sha256"):
                stale.append(f"seg{part.get('index')}_{kind}")
    return stale


def segment_corrections(seg: dict[str, Any]) -> dict[str, Any] | None:
    """The segments' corrections record (``export --segments --recalibrate``: per-prefix
    BatchNorm statistics fed to the graphs as inputs, ``adn_edge.export.corrections``),
    or None for plain segments. A runtime that cannot feed them must refuse the graphs."""
    rec = seg.get("corrections")
    return rec if isinstance(rec, dict) else None


def correction_key(prefix: str, name: str) -> str:
    """The key of one correction vector in the corrections file: part k's input ``name``
    for the sub-networks whose code starts with ``prefix`` (``k + 1`` flags)."""
    return f"{prefix}:{name}"


def code_prefixes(length: int) -> list[str]:
    """Every code prefix of ``length`` flags, the full-stage ones first."""
    return [format(i, f"0{length}b") for i in range(2 ** length - 1, -1, -1)]


_RE_EXPORT_CORRECTED = ("Re-export the segments with `adn-edge export CHECKPOINT --segments --recalibrate DATA`; "
                        "the corrections and the graphs are written together.")


def read_segment_corrections(directory: str | Path, seg: dict[str, Any]) -> dict[str, Any]:
    """The correction vectors of corrected segments (``{key: float32 array}``, see
    :func:`correction_key`), read from bytes checked against the manifest's sha256
    (:func:`read_verified`) and without pickle. Empty for plain segments."""
    import io

    import numpy as np

    rec = segment_corrections(seg)
    if rec is None:
        return {}
    data = read_verified(directory, rec["file"])
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
    except (ValueError, OSError, KeyError) as exc:
        raise AdnError(f"{rec['file']['path']} in {str(directory)!r} is not a readable corrections file ({exc}).",
                       _RE_EXPORT_CORRECTED) from None


def correction_feeds(arrays: dict[str, Any], count: int, part_inputs: dict[tuple[int, str], list[str]],
                     where: str) -> list[dict[str, dict[str, Any]]]:
    """``[k][prefix] -> {input name: array}`` for every part and prefix, checked complete:
    ``part_inputs[(k, flag)]`` lists the correction inputs of part k's form ``flag``."""
    out: list[dict[str, dict[str, Any]]] = []
    for k in range(count):
        per: dict[str, dict[str, Any]] = {}
        for p in code_prefixes(k + 1):
            names = part_inputs[(k, p[-1])]
            missing = [n for n in names if correction_key(p, n) not in arrays]
            if missing:
                raise AdnError(f"{where} has no corrections {missing[:3]} for part {k} of the sub-networks "
                               f"starting {p} (the segment graphs read them as inputs).", _RE_EXPORT_CORRECTED)
            per[p] = {n: arrays[correction_key(p, n)] for n in names}
        out.append(per)
    return out


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


def running_segments(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`segments_record` for opening a directory in segmented mode (the switcher and
    every segmented backend ask the same question, with the same answer)."""
    return segments_record(data, ", so it cannot run in segmented mode",
                           " (or adn_edge.export.segments.export_segments(model, DIR)), or open the "
                           "directory with segmented=False")


def relpath_problem(relpath: Any) -> str | None:
    """Why ``relpath`` cannot name a file of a model directory, or None when it can.

    A listed path is relative to the directory, in POSIX form and normalised: no
    absolute path (``/x``, ``C:\\x``), no ``..`` and no empty or ``.`` component (so
    one file has one spelling), no backslash (a separator on Windows, a name character
    here) and no NUL. This is the textual half of :func:`resolve_in`, checked for every
    listed file when the manifest is validated.
    """
    if not isinstance(relpath, str) or not relpath:
        return "must be a non-empty relative path"
    if "\x00" in relpath or "\\" in relpath:
        return "must not contain a NUL or a backslash"
    if relpath.startswith("/") or PureWindowsPath(relpath).drive:
        return "must be relative to the model directory, not absolute"
    if any(part in ("", ".", "..") for part in relpath.split("/")):
        return "must be a normalised path inside the model directory (no '..', '.' or empty component)"
    return None


def resolve_in(directory: str | os.PathLike[str], relpath: Any, field: str = "path") -> Path:
    """The one path rule of a model directory: ``relpath`` (read from a manifest field
    named ``field``) as a real path inside ``directory``, or an :class:`AdnError`.

    Why: a manifest is data that may come from anywhere (a download, a copied SD card);
    before this, a record of ``../outside/evil.onnx``, ``/etc/passwd`` or a symlink to
    ``/dev/zero`` (with a matching sha256, or none needed to hang on a FIFO) was read
    by bench, eval and the runtime. The text must pass :func:`relpath_problem`, and the
    path with every symlink resolved must still lie inside the directory's real path
    (a symlink to another file of the directory is fine). Returns the resolved path,
    so that the caller opens the file that was checked rather than re-following links.
    """
    problem = relpath_problem(relpath)
    if problem:
        raise AdnError(f"The manifest of {str(directory)!r} lists the file {field} {relpath!r}, which {problem}.",
                       "adn-edge reads only files inside the model directory; re-export it.")
    root = os.path.realpath(directory)
    target = os.path.realpath(os.path.join(root, relpath))
    if target == root or os.path.commonpath([root, target]) != root:
        raise AdnError(f"{relpath} (the manifest's {field}) in {str(directory)!r} resolves to {target!r}, outside "
                       "the model directory (a symbolic link leads out of it).",
                       "adn-edge reads only files inside the model directory; replace the link by the file.")
    return Path(target)


def _open_regular(path: Path, shown: str, directory: str | os.PathLike[str]) -> BinaryIO:
    """``path`` (from :func:`resolve_in`) opened for reading, refused unless it is a regular
    file (:func:`adn_edge.fileio.open_regular`: a FIFO would hang the reader, a device
    such as ``/dev/zero`` never ends); the link :func:`resolve_in` resolved is not
    re-followed."""
    try:
        return open_regular(path, f"file {shown} listed in {FILENAME}", follow_links=False,
                            hint="Re-export (or re-build) the model directory.")
    except FileNotFoundError:
        raise AdnError(f"{shown} is listed in {FILENAME} but missing from {str(directory)!r}.",
                       "Re-export (or re-build) the model directory.") from None
    except OSError as exc:
        raise AdnError(f"{shown} in {str(directory)!r} cannot be read: {exc.strerror}.",
                       "Re-export (or re-build) the model directory.") from None


def _mismatch(shown: Any, directory: str | os.PathLike[str], detail: str = "") -> AdnError:
    return AdnError(
        f"{shown} in {str(directory)!r} does not match the sha256 recorded in {FILENAME} "
        f"({detail}it was modified or truncated after export).",
        "Re-export (or re-build) it; adn-edge refuses to run a file it cannot verify.")


def _size_problem(f: BinaryIO, record: dict[str, Any]) -> str:
    """A size differing from the record's ``bytes``, said before the file is read: a
    wrong file (however large) is refused without reading it."""
    size, want = os.fstat(f.fileno()).st_size, record.get("bytes")
    if isinstance(want, int) and not isinstance(want, bool) and size != want:
        return f"it is {size} bytes, the record says {want}: "
    return ""


def _digest(path: Path, shown: str, directory: str | os.PathLike[str],
            record: dict[str, Any] | None = None) -> tuple[str, int]:
    """(sha256, size) of ``path`` (from :func:`resolve_in`), hashed in chunks; with a
    ``record``, a size unlike its ``bytes`` is refused before anything is read."""
    h = hashlib.sha256()
    with _open_regular(path, shown, directory) as f:
        detail = _size_problem(f, record) if record is not None else ""
        if detail:
            raise _mismatch(shown, directory, detail)
        size = os.fstat(f.fileno()).st_size
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest(), size


def verify_file(directory: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Check that a listed file lies inside the directory (:func:`resolve_in`), is a
    regular file and matches its sha256; return its resolved path (symlinks resolved,
    so that a caller opening it again reads the file that was checked)."""
    p = resolve_in(directory, record.get("path"), "path")
    if _digest(p, record["path"], directory, record)[0] != record.get("sha256"):
        raise _mismatch(record["path"], directory)
    return p


def read_verified(directory: str | Path, record: dict[str, Any]) -> bytes:
    """The bytes of a manifest-listed file, checked against its sha256 as they are read.

    Hashing the very bytes that are then handed to the inference library (rather than
    hashing the file and re-reading it) leaves no window in which the file could
    change between the check and the load, and reads each artifact once. The path
    goes through :func:`resolve_in` and must be a regular file, as in :func:`verify_file`.
    """
    p = resolve_in(directory, record.get("path"), "path")
    with _open_regular(p, record["path"], directory) as f:
        detail = _size_problem(f, record)
        if detail:
            raise _mismatch(record["path"], directory, detail)
        try:
            data: bytes = f.read()
        except OSError as exc:
            raise AdnError(f"{record['path']} in {str(directory)!r} cannot be read: {exc.strerror}.") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise _mismatch(record["path"], directory)
    return data
