"""Reading what ``bench`` and ``eval`` leave in a model directory: checked, normalised.

Policies, plots, ``bench`` and ``info`` read benchmark reports and evaluation results
only through here, so every reader applies the same schema check (docs/model-directory.md)
and the same code normalisation (an ``eval.json`` may spell codes as ``TFFF``; a
reader answers in canonical ``0111``). Choosing *which* report fits a switcher
(:func:`find_bench`) is a rule of the directory too: by device, backend, mode and
precision, by content, not by name alone.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.fileio import read_json, write_json
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.names import BENCH_GLOB, EVAL_GLOB, bench_name, eval_name
from adn_edge.modeldir.retire import set_aside

SCHEMA = 1
DEVICE_KINDS = ("orin", "cuda", "cpu")
BACKENDS = ("tensorrt", "onnxruntime", "torch")
POWER_SOURCES = ("tegrastats", "nvml", "none")
LATENCY_KEYS = ("mean", "p50", "p90", "p99", "min", "max")
ENERGY_KEYS = ("power_w", "energy_mj", "energy_above_idle_mj", "power_samples")


def _newest(paths: Sequence[Path]) -> Path:
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name))


def find_bench(directory: Path, device: str | None = None, backend: str | None = None,
               segmented: bool | None = None, precision: str | None = None) -> Path | None:
    """The bench report to trust for a switcher of ``backend`` (in segmented mode when
    ``segmented``, which defaults to the backend's name ending in ``-segmented``, as a
    segmented switcher's does), running ``precision``.

    Monolithic: the reports of ``device`` when one is named (``bench-<device>*.json``),
    else the newest report made with ``backend``, else the newest of all; segmented
    reports are never used. They time other graphs (a boundary per stage, no fusion
    across it), and ignoring them keeps every monolithic choice what it was before
    segmented reports existed.

    Segmented: its own kind first (the newest segmented report of the device or of
    ``backend``), then the monolithic report of the same device or backend as a
    stand-in (what segmented switchers used before segmented reports existed: the
    same sub-networks, short of the boundary costs, ~1 % on ONNX Runtime CPU;
    :class:`Policy` notes it), then the newest segmented report of any backend, then
    the newest of all. A close measurement beats none, with which no latency budget
    can be honoured at all.

    Precision: at every step a report measured at ``precision`` (its ``precision``
    key) wins; only when none is does another precision stand in (noted too): INT8
    and FP16 latencies differ by 1.5-3x, so the wrong one misplaces every budget.
    """
    seg = is_segmented(backend, segmented)
    paths = sorted(directory.glob(BENCH_GLOB))
    if device is not None:
        paths = [p for p in paths if p.name == f"bench-{device}.json" or p.name.startswith(f"bench-{device}-")]
    found = [(p, *_bench_kind(p)) for p in paths]
    base = backend.removesuffix("-segmented") if backend is not None and device is None else None
    # In order of preference: (same backend?, segmented?); None matches any backend.
    order = [(base, True), (base, False), (None, True), (None, False)] if seg else [(base, False), (None, False)]
    for want_precision in ([precision, None] if precision else [None]):
        for want_backend, want_seg in order:
            same = [p for p, b, s, q in found if s == want_seg and (want_backend is None or b == want_backend)
                    and (want_precision is None or q == want_precision)]
            if same:
                return _newest(same)
    if device is not None:
        have = ", ".join(sorted(q.name for q in directory.glob(BENCH_GLOB))) or "none"
        names = " or ".join([bench_name(device, True), bench_name(device)] if seg else [bench_name(device)])
        raise AdnError(f"{str(directory)!r} has no {names} (benchmark reports there: {have}).",
                       f"Create it with `adn-edge bench {directory} --device {device}{' --segmented' if seg else ''}`.")
    return None


def is_segmented(backend: str | None, segmented: bool | None) -> bool:
    """``segmented`` when given, else what a switcher's backend name says (``onnxruntime-segmented``)."""
    return segmented if segmented is not None else bool(backend and backend.endswith("-segmented"))


def _bench_kind(path: Path) -> tuple[str | None, bool, str | None]:
    """(backend, segmented, precision) of a report; an unreadable one stays a candidate
    (by its name), so that choosing it fails with load_bench's clear error, not silently."""
    try:
        data = read_json(path, "benchmark report")
    except AdnError:
        data = None
    if not isinstance(data, dict):
        return None, path.name.endswith("-segmented.json"), None
    return data.get("backend"), data.get("segmented") is True, data.get("precision")


def load_bench(path: Path) -> dict[str, Any]:
    """A bench report, checked against the whole schema (a reader trusts no number it
    has not checked: a NaN latency or a negative energy would misplace every budget)."""
    data = read_json(path, "benchmark report")
    validate_bench(data, repr(str(path)))
    return cast("dict[str, Any]", data)


def find_eval(directory: Path, precision: str | None = None, segmented: bool = False) -> Path | None:
    """The evaluation that describes what runs: ``eval-<precision>[-segmented].json`` for
    a switcher of that precision and mode (an INT8 switcher must not be ranked by FP32
    accuracies), then ``eval-<precision>.json``, then ``eval.json``, then the newest."""
    variants = []
    p = (precision or "").lower()
    if p and p != "fp32":
        variants += [f"{p}-segmented"] if segmented else []
        variants.append(p)
    elif segmented:
        variants.append("segmented")
    for variant in [*variants, ""]:
        candidate = directory / eval_name(variant)
        if candidate.is_file():
            return candidate
    found = sorted(directory.glob(EVAL_GLOB))
    return _newest(found) if found else None


def load_eval(path: Path, num_stages: int, metric: str = "top1") -> dict[str, float]:
    """``{canonical code: metric}`` of an evaluation file; codes in any accepted spelling
    are normalised (an unknown one is an error naming the file), values must be finite."""
    return eval_values(read_json(path, "evaluation results"), path, num_stages, metric)


def eval_values(data: Any, path: Path, num_stages: int, metric: str = "top1") -> dict[str, float]:
    """:func:`load_eval` of an evaluation record already read from ``path``."""
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("subnets"), dict):
        raise AdnError(f"{str(path)!r} is not an evaluation result of schema 1: expected "
                       '{"schema": 1, "dataset": ..., "subnets": {CODE: {"top1": ..., "top5": ..., "samples": ...}}}.')
    out = {}
    for spelling, entry in data["subnets"].items():
        value = entry.get(metric) if isinstance(entry, dict) else None
        if value is None:
            continue
        try:
            code = subnet.parse_code(str(spelling), num_stages)
        except AdnError as exc:
            raise AdnError(f"{str(path)!r} lists a sub-network {spelling!r} that this model does not have: "
                           f"{exc.message}", "Re-run `adn-edge eval` for this model directory.") from None
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            raise AdnError(f"{str(path)!r} gives {metric}={value!r} for {code}, which is not a finite number.",
                           "Re-run `adn-edge eval` for this model directory.")
        out[code] = float(value)
    return out


def load_accuracy(directory: Path, manifest: Mapping[str, Any], metric: str = "top1", *,
                  precision: str | None = None, segmented: bool = False, path: Path | None = None,
                  notes: list[str] | None = None) -> dict[str, float] | None:
    """Accuracy per canonical code from the evaluation that fits (``path``, default
    :func:`find_eval`), only for what still is in the directory (:func:`current_codes`);
    None when there is none."""
    path = path if path is not None else find_eval(Path(directory), precision, segmented)
    if path is None:
        return None
    record = read_json(path, "evaluation results")
    accuracy = eval_values(record, path, int(manifest["num_stages"]), metric)
    keep = current_codes(record, manifest, accuracy, path.name, notes)
    return {c: v for c, v in accuracy.items() if c in keep} or None


# --------------------------------------------------------------------------- identity


def graph_digest(manifest: Mapping[str, Any], code: str) -> str | None:
    """What identifies sub-network ``code``'s computation in this directory: the sha256 of
    its float32 graph (every precision derives from it), or of its chain of segment
    graphs when it exists only in segmented form; None when the directory lacks both."""
    rec = ((manifest.get("subnets") or {}).get(code) or {}).get("files", {}).get("onnx")
    if isinstance(rec, Mapping) and isinstance(rec.get("sha256"), str):
        return str(rec["sha256"])
    seg = manifest.get("segments")
    parts = seg.get("parts") if isinstance(seg, Mapping) else None
    if not parts or len(parts) != len(code):
        return None
    kinds = {"1": "full", "0": "skip"}
    digests = []
    for part, flag in zip(parts, code):
        r = ((part.get("files") or {}) if isinstance(part, Mapping) else {}).get(kinds.get(flag, ""))
        if not (isinstance(r, Mapping) and isinstance(r.get("sha256"), str)):
            return None
        digests.append(str(r["sha256"]))
    return "chain:" + hashlib.sha256(":".join(digests).encode()).hexdigest()


def identity(manifest: Mapping[str, Any], codes: Sequence[str] | None) -> dict[str, Any]:
    """The ``identity`` a result file records: the weights (the source checkpoint's
    sha256) and, per sub-network measured, :func:`graph_digest` (``graphs`` None for a
    PyTorch evaluation of the checkpoint itself)."""
    source = manifest.get("source") if isinstance(manifest.get("source"), Mapping) else {}
    return {"source_sha256": source.get("sha256"), "recalibrated": manifest.get("recalibration") is not None,
            "graphs": None if codes is None else {c: graph_digest(manifest, c) for c in codes}}


def current_codes(record: Any, manifest: Mapping[str, Any], codes: Mapping[str, Any] | Sequence[str],
                  name: str, notes: list[str] | None = None) -> set[str]:
    """Which of ``codes`` a result file still describes, by its ``identity`` (see
    :func:`identity`) against the directory's manifest now; what is dropped is said in
    ``notes``. A result of other weights, or of graphs since re-exported, describes
    nothing here; one from before identities were recorded is trusted, as it was then."""
    codes = set(codes)
    ident = record.get("identity") if isinstance(record, Mapping) else None
    say = notes.append if notes is not None else (lambda _m: None)
    if not isinstance(ident, Mapping):  # written before identities were recorded: trusted, as before
        return codes
    now = identity(manifest, None)
    if ident.get("source_sha256") != now["source_sha256"]:
        say(f"{name} measured other weights (source sha256 {str(ident.get('source_sha256'))[:12]}, not "
            f"{str(now['source_sha256'])[:12]}): ignored")
        return set()
    graphs = ident.get("graphs")
    if graphs is None:  # a PyTorch evaluation of the checkpoint
        if now["recalibrated"] or ident.get("recalibrated"):
            say(f"{name} evaluated the checkpoint in PyTorch, and it or these graphs were recalibrated per "
                "sub-network, each on its own data: ignored")
            return set()
        return codes
    if not isinstance(graphs, Mapping):
        say(f"{name} has a malformed identity: ignored")
        return set()
    stale = {c for c in codes if graphs.get(c) is None or graphs.get(c) != graph_digest(manifest, c)}
    if stale:
        say(f"{name}: {', '.join(sorted(stale))} measured graphs since replaced: ignored")
    return codes - stale


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v: Any) -> bool:
    return _int(v) and v >= 1


def bench_problems(obj: Any) -> list[str]:
    """Every way ``obj`` breaks the ``bench-<device>.json`` schema (empty when valid)."""
    p: list[str] = []
    if not isinstance(obj, Mapping):
        return ["the report is not a JSON object"]
    if obj.get("schema") != SCHEMA or not _int(obj.get("schema")):
        p.append(f"schema must be {SCHEMA}")
    dev = obj.get("device")
    if not isinstance(dev, Mapping):
        p.append("device must be an object")
    else:
        if dev.get("kind") not in DEVICE_KINDS:
            p.append(f"device.kind must be one of {DEVICE_KINDS}, got {dev.get('kind')!r}")
        for k in ("name", "power_mode"):
            if k not in dev:
                p.append(f"device.{k} is missing (null when unknown)")
            elif dev[k] is not None and not isinstance(dev[k], str):
                p.append(f"device.{k} must be a string or null")
    if obj.get("backend") not in BACKENDS:
        p.append(f"backend must be one of {BACKENDS}, got {obj.get('backend')!r}")
    if not _pos_int(obj.get("batch")):
        p.append("batch must be a positive integer")
    pw = obj.get("power")
    source = None
    if not isinstance(pw, Mapping):
        p.append("power must be an object")
    else:
        source = pw.get("source")
        if source not in POWER_SOURCES:
            p.append(f"power.source must be one of {POWER_SOURCES}, got {source!r}")
        for k in ("rail", "idle_w", "interval_ms"):
            if k not in pw:
                p.append(f"power.{k} is missing (null when not measured)")
        if pw.get("rail") is not None and not isinstance(pw.get("rail"), str):
            p.append("power.rail must be a string or null")
        for k in ("idle_w", "interval_ms"):
            if pw.get(k) is not None and not _num(pw.get(k)):
                p.append(f"power.{k} must be a finite number or null")
        if source == "none" and pw.get("idle_w") is not None:
            p.append("power.idle_w must be null when no power source was used")
    subs = obj.get("subnets")
    if not isinstance(subs, Mapping) or not subs:
        p.append("subnets must be a non-empty object keyed by sub-network code")
        return p
    lengths = {len(c) for c in subs if isinstance(c, str)}
    if len(lengths) > 1:
        p.append("sub-network codes must all have the same length")
    for code, e in subs.items():
        where = f"subnets[{code!r}]"
        if not isinstance(code, str) or not re.fullmatch(r"[01]+", code):
            p.append(f"{where}: key must be a canonical 0/1 code")
        if not isinstance(e, Mapping):
            p.append(f"{where} must be an object")
            continue
        lat = e.get("latency_ms")
        if not isinstance(lat, Mapping):
            p.append(f"{where}.latency_ms must be an object")
        else:
            bad = [k for k in LATENCY_KEYS if not (_num(lat.get(k)) and lat[k] >= 0)]
            if bad:
                p.append(f"{where}.latency_ms needs non-negative numbers for {', '.join(bad)}")
            else:
                order = [lat[k] for k in ("min", "p50", "p90", "p99", "max")]
                tol = 1e-6 * max(1.0, lat["max"])
                if any(b < a - tol for a, b in zip(order, order[1:])) or not (
                        lat["min"] - tol <= lat["mean"] <= lat["max"] + tol):
                    p.append(f"{where}.latency_ms must satisfy min <= p50 <= p90 <= p99 <= max and min <= mean <= max")
        if not (_num(e.get("throughput_ips")) and e["throughput_ips"] > 0):
            p.append(f"{where}.throughput_ips must be a positive number")
        if not _pos_int(e.get("iterations")):
            p.append(f"{where}.iterations must be a positive integer")
        for k in ENERGY_KEYS:
            if k not in e:
                p.append(f"{where}.{k} is missing (null when not measured)")
                continue
            v = e[k]
            if source == "none" and v is not None:
                p.append(f"{where}.{k} must be null: no power source was used")
            elif v is not None and not (_int(v) if k == "power_samples" else _num(v)):
                p.append(f"{where}.{k} must be a {'integer' if k == 'power_samples' else 'finite number'} or null")
    return p


def validate_bench(obj: Any, where: str = "The benchmark report") -> None:
    """Raise :class:`AdnError` listing every schema violation of a bench report."""
    problems = bench_problems(obj)
    if problems:
        raise AdnError(f"{where} does not match the bench report schema (docs/model-directory.md): "
                       + "; ".join(problems) + ".",
                       "Re-run `adn-edge bench` with this version of adn-edge; if it wrote this file, please "
                       "report it with the file.")


# --------------------------------------------------------------------------- writing eval files

_MERGE_KEYS = {"schema": None, "dataset": None, "split": None, "samples": None, "source": None,
               "recalibrated": False, "precision": "fp32", "segmented": False}
"""What must agree for two evaluations to share one file (absent keys read as these
defaults, so records of older writers merge instead of being replaced)."""


def _mergeable(old: Any, new: Mapping[str, Any]) -> bool:
    if not (isinstance(old, Mapping) and isinstance(old.get("subnets"), Mapping)):
        return False
    if any(old.get(k, d) != new.get(k, d) for k, d in _MERGE_KEYS.items()):
        return False
    ident_old, ident_new = old.get("identity"), new.get("identity")
    if isinstance(ident_old, Mapping) and isinstance(ident_new, Mapping):
        return bool(ident_old.get("source_sha256") == ident_new.get("source_sha256"))
    return ident_old is None and ident_new is None


def write_eval_record(directory: str | os.PathLike[str], record: Mapping[str, Any], variant: str = "",
                      merge: bool = True) -> tuple[Path, list[str]]:
    """Write an evaluation as ``eval[-variant].json``, under the directory's writer lock.

    An earlier file of the same data, weights, precision and mode keeps its other
    sub-networks (one file never mixes figures measured on different data or
    weights). One that cannot be merged is moved to ``.retired/`` with a note,
    never silently overwritten: an evaluation of one sub-network must not erase
    sixteen others."""
    directory = Path(directory)
    path = directory / eval_name(variant)
    notes: list[str] = []
    out = dict(record)
    with writing(directory, "eval"):
        if path.exists():
            try:
                old = read_json(path, "evaluation file")
            except AdnError:
                old = None
            if merge and _mergeable(old, out):
                out["subnets"] = {**old["subnets"], **out["subnets"]}  # type: ignore[index]
            else:
                moved = set_aside(directory, [path])
                notes.append(f"{path.name} held results of other data, weights or graphs; moved to "
                             f"{moved}/{path.name}")
        write_json(path, out)
    return path, notes
