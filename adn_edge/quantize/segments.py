"""``adn-edge quantize DIR --segments``: Q/DQ INT8 twins of the 2*S segment graphs.

The segmented mode (docs/model-directory.md, "The segments record") runs code ``c``
as part k in form ``c[k]`` for every k. Part 0 reads images, but part k > 0 reads the
feature map parts 0..k-1 produce, and *which* feature map depends on their forms:
part 2 of ``1111`` and of ``0011`` see different activations. One set of INT8 scales
per segment form must serve every sub-network the form is chained into, so:

* **Calibration over all prefixes.** The calibration input of part k (either form) is
  the calibration images run through the float32 segment graphs 0..k-1 with ONNX
  Runtime in *every* one of the 2^k combinations of their forms: part 2 calibrates on
  N images x 4 prefixes (``11``, ``10``, ``01``, ``00``), part 3 on N x 8. The prefix
  tree is walked depth first per group of images (:func:`walk`), so only one path's
  feature maps are held at a time, and each form's calibrator (ONNX Runtime's, fed
  incrementally: :class:`~adn_edge.quantize.qdq.RangeCalibrator`) accumulates
  ranges over everything it is fed. Unlike TensorRT 10's segment calibration
  (:mod:`adn_edge.backends.tensorrt.segment_calibration`, one prefix per batch in
  turn), every image reaches every part through every prefix.
* **The monolithic recipe** (:mod:`adn_edge.quantize.qdq`): the same calibration
  methods, per-channel symmetric INT8 weights, symmetric INT8 activations, float
  biases, dedicated Q/DQ pairs and content-named initializers, so INT8 segments
  share identical weights across sessions as the float32 ones do, and TensorRT can
  parse them. The float32 boundaries stay: each part's input is quantised by its
  own first Q/DQ pair and its output dequantised, so parts chain as before.
* **Accuracy of every chain.** With evaluation data, all 2^S sub-networks run
  through the INT8 segments and through the float32 segments on the same images
  (again depth first over the prefix tree, each part's output computed once per
  prefix); top-1, agreement and the logit error per sub-network go to the manifest
  (``segments.quantization.accuracy``, ``segments.parity_int8``,
  ``segments.subnets[code].rel_err_int8``) and to ``eval-int8-segmented.json``.

Manifest (docs/model-directory.md): each part gains ``files_int8`` (``{"full",
"skip"}`` file records of ``<arch>_seg<k>_<kind>.int8.onnx``, sha256 like every
file) and ``quantization[kind]`` (settings, calibration with the prefixes and the
samples fed, method, library, ranges cache, Q/DQ statistics). The ranges cache of a
form (``<arch>_seg<k>_<kind>.int8.<method>.ranges.json``) is keyed by its graph, the
images, the method, the sample count *and the float32 graphs of the parts before it*:
a re-exported part 1 makes parts 2..S-1's ranges stale, not only its own.

Everything runs under the directory's writer lock, each part's two graphs are
written atomically and recorded (manifest saved) before the next part, and a form
whose INT8 graph is up to date (same float32 graph, preceding graphs, images,
method, samples and recipe) is kept unless ``force``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adn_edge import subnet as subnet_mod
from adn_edge.errors import AdnError, AdnFailure, AdnProblem
from adn_edge.fileio import ensure_writable_dir, read_json, sha256_file, write_bytes
from adn_edge.modeldir import manifest as manifest_mod
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.manifest import SEGMENT_FILE_KEYS, SEGMENT_KINDS
from adn_edge.modeldir.names import ranges_cache_name, segment_file, segment_key
from adn_edge.modeldir.results import identity, write_eval_record
from adn_edge.quantize import accuracy as acc_mod
from adn_edge.quantize import defaults, qdq
from adn_edge.quantize.calibration import CalibrationData

if TYPE_CHECKING:
    from adn_edge.quantize.runner import QuantizeOptions

Log = Callable[[str], None]
Iterate = Callable[[Sequence[Any], str], Iterable[Any]]

FILES_KEY = SEGMENT_FILE_KEYS["int8"]
"""``segments.parts[k].files_int8``: the Q/DQ graphs, ``{"full", "skip"}``."""
VARIANT = ".int8"
"""File name variant: ``<arch>_seg<k>_<kind>.int8.onnx``."""
EVAL_VARIANT = "int8-segmented"
"""``eval-int8-segmented.json``, the file ``adn-edge eval --segmented --precision int8`` writes too."""
SOURCE = "onnxruntime-segmented"
CALIB_BATCH = 8
GROUP_BATCHES = 8
"""Images go through the prefix tree in groups of ``CALIB_BATCH * GROUP_BATCHES``: one
calibrator call per form and prefix holds that many samples' intermediate tensors."""
EVAL_GROUP = 64
PARITY_SAMPLES = 64
"""Calibration images the logit error is measured on when there is no evaluation data."""
SEGMENT_RECIPE = 1
"""Bumped when what this module adds to the monolithic recipe changes (shared boundary
ranges, float logits), so INT8 segments made by an older one are redone."""


# --------------------------------------------------------------------------- the prefix tree


def walk(run: Callable[[int, str, np.ndarray], np.ndarray], x: np.ndarray, depth: int,
         visit: Callable[[str, np.ndarray], None]) -> None:
    """Call ``visit(prefix, features)`` for every prefix of 0..``depth`` flags, where
    ``features`` is ``x`` run through parts 0..len(prefix)-1 in the forms the prefix
    names (``run(k, flag, v)`` runs part k in form ``flag``). Depth first, the
    super-net's flags (``1``) first, so each part's output is computed once per
    prefix and only one path's features are held at a time."""

    def down(prefix: str, v: np.ndarray) -> None:
        visit(prefix, v)
        if len(prefix) < depth:
            for flag in SEGMENT_KINDS:  # "1" (full), then "0" (skip)
                down(prefix + flag, run(len(prefix), flag, v))

    down("", x)


def _slices(x: np.ndarray, size: int, static: bool) -> list[np.ndarray]:
    """``x`` in batches of ``size``; with a static batch the last one is padded with
    copies of its last sample (the caller drops their outputs)."""
    out = []
    for i in range(0, len(x), size):
        b = x[i:i + size]
        if static and len(b) < size:
            b = np.concatenate([b, np.repeat(b[-1:], size - len(b), axis=0)])
        out.append(np.ascontiguousarray(b))
    return out


class Chain:
    """One precision's segment graphs in ONNX Runtime sessions (CPU, the optimisations
    a deployment gets: Q/DQ fused into integer kernels), each file checked against its
    sha256 as it is read; sessions opened on first use."""

    def __init__(self, directory: Path, parts: Sequence[dict[str, Any]], key: str, threads: int | None,
                 batch: int, static: bool) -> None:
        self.directory = directory
        self.parts = parts
        self.key = key
        self.threads = threads
        self.batch = batch
        self.static = static
        self._sessions: dict[tuple[int, str], Any] = {}

    def session(self, k: int, flag: str) -> Any:
        if (k, flag) not in self._sessions:
            rec = self.parts[k][self.key][SEGMENT_KINDS[flag]]
            self._sessions[(k, flag)] = acc_mod.session(manifest_mod.read_verified(self.directory, rec),
                                                        self.threads)
        return self._sessions[(k, flag)]

    def run(self, k: int, flag: str, x: np.ndarray) -> np.ndarray:
        sess = self.session(k, flag)
        part = self.parts[k]
        outs = [sess.run([part["output"]], {part["input"]: b})[0] for b in _slices(x, self.batch, self.static)]
        return np.concatenate(outs)[:len(x)].astype(np.float32, copy=False)

    def logits(self, x: np.ndarray, group: int = EVAL_GROUP) -> dict[str, np.ndarray]:
        """Logits of every code for ``x``, by code (all 2^S chains, prefix outputs shared)."""
        depth = len(self.parts)
        out: dict[str, list[np.ndarray]] = {}

        def keep(prefix: str, v: np.ndarray) -> None:
            if len(prefix) == depth:
                out.setdefault(prefix, []).append(v)

        for i in range(0, len(x), group):
            walk(self.run, x[i:i + group], depth, keep)
        return {code: np.concatenate(vs) for code, vs in out.items()}

    def close(self) -> None:
        self._sessions.clear()


# --------------------------------------------------------------------------- results


@dataclass
class FormQuantization:
    """One segment form's INT8 graph."""

    index: int
    kind: str
    status: str
    """``quantized`` or ``up to date``."""
    file: str
    cache: str
    """``hit``, ``miss`` (calibrated now) or ``-`` (kept)."""
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)
    inputs: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return segment_key(self.index, self.kind)

    def record(self) -> dict[str, Any]:
        return {"part": self.index, "kind": self.kind, "status": self.status, "file": self.file,
                "calibration_cache": self.cache, "seconds": round(self.seconds, 3), "qdq": self.stats,
                "prefixes": list(self.prefixes), "inputs": self.inputs, "warnings": list(self.warnings)}


@dataclass
class ChainAccuracy:
    """One sub-network run through the INT8 segments, against the float32 segments."""

    code: str
    rel_err: float
    accuracy: acc_mod.Comparison | None = None

    def record(self) -> dict[str, Any]:
        return {"code": self.code, "skip_cfg": subnet_mod.to_skip_cfg(self.code),
                "logit_rel_err": round(self.rel_err, 6),
                "accuracy": self.accuracy.record() if self.accuracy is not None else None}


@dataclass
class SegmentsQuantizeReport:
    directory: Path
    arch: str
    method: dict[str, Any]
    calibration: dict[str, Any]
    forms: list[FormQuantization] = field(default_factory=list)
    subnets: list[ChainAccuracy] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "arch": self.arch, "segments": True, "method": self.method,
                "calibration": self.calibration, "library": qdq.library_record(),
                "parts": [f.record() for f in self.forms], "subnets": [s.record() for s in self.subnets],
                "eval_files": self.eval_files, "warnings": self.warnings, "notes": self.notes,
                "seconds": round(self.seconds, 2)}


# --------------------------------------------------------------------------- the run


def _prefix_digest(parts: Sequence[dict[str, Any]], k: int) -> str:
    """sha256 over the float32 graphs of parts 0..k-1 (both forms): what part k's
    calibration features are a function of, besides the images."""
    h = hashlib.sha256()
    for part in parts[:k]:
        for kind in SEGMENT_KINDS.values():
            h.update(str(part["files"][kind]["sha256"]).encode() + b"\0")
    return h.hexdigest()


def _prefixes(k: int) -> list[str]:
    """The 2^k prefixes of part k, in the order they are fed (super-net's first)."""
    return subnet_mod.all_codes(k) if k else [""]


def _settings(parts: Sequence[dict[str, Any]], k: int, kind: str, method: qdq.Method,
              data: CalibrationData) -> dict[str, Any]:
    """What a form's INT8 graph is a function of; equal settings -> it is up to date.
    Part k's output is quantised on part k+1's input range, which the float32 graphs of
    parts 0..k (both forms) produce: ``boundary_sha256``."""
    return {"source_sha256": str(parts[k]["files"][kind]["sha256"]), "prefix_sha256": _prefix_digest(parts, k),
            "boundary_sha256": _prefix_digest(parts, k + 1) if k + 1 < len(parts) else None,
            "features": "all prefixes", "method": method.record(), "samples": data.count,
            "calibration_fingerprint": data.fingerprint(), "recipe": qdq.RECIPE, "segment_recipe": SEGMENT_RECIPE}


PASS_THROUGH = ("Relu", "Clip")
"""Activations whose output range bounds their input's usefully (what they cut off is
lost either way): a part's output tensor and the tensors feeding it through these share
the boundary range."""


def boundary_tensors(graph: Any, output: str) -> list[str]:
    """The graph output ``output`` and the tensors that reach it through
    :data:`PASS_THROUGH` activations (``x2`` <- Relu <- ``/1/Add_output_0``): ONNX
    Runtime quantises a Relu's output with its input's parameters, so all of them must
    carry the boundary range for the output to land on the next part's grid."""
    producers = {o: n for n in graph.node for o in n.output}
    names = [output]
    node = producers.get(output)
    while node is not None and node.op_type in PASS_THROUGH and node.input and node.input[0] not in names:
        names.append(node.input[0])
        node = producers.get(node.input[0])
    return names


def _static_batch(man: dict[str, Any]) -> int | None:
    b = man["input"]["shape"][0]
    return int(b) if isinstance(b, int) else None


def _segments(man: dict[str, Any]) -> dict[str, Any]:
    seg = manifest_mod.segments_record(
        man, " to quantize",
        " first, or quantize the monolithic graphs: leave --segments out")
    if manifest_mod.segment_corrections(seg) is not None:
        # Their graphs take per-sub-network correction vectors as inputs; the calibration
        # here runs each form once per prefix without them, which would mis-size every range.
        raise AdnError("These segment graphs carry per-sub-network BatchNorm corrections (exported with "
                       "--segments --recalibrate), which INT8 quantisation of segments does not support yet.",
                       "Quantize the recalibrated monolithic graphs (`adn-edge quantize DIR --calib ...`, without "
                       "--segments), or export segments without --recalibrate into another directory to quantize "
                       "those.")
    return seg


def quantize_segments(directory: str | os.PathLike[str], calib: str | os.PathLike[str],
                      options: QuantizeOptions | None = None, iterate: Iterate | None = None,
                      log: Log | None = None) -> SegmentsQuantizeReport:
    """Calibrate (over all prefixes) and quantise the 2*S segment graphs of a model
    directory (see the module docstring); returns the report.

    ``calib``: a folder of images or ``builtin``/``builtin:NAME``; ``options``: a
    :class:`~adn_edge.quantize.runner.QuantizeOptions` (the same options as the
    monolithic quantiser). Raises :class:`~adn_edge.errors.AdnError` for bad input,
    a directory without segment graphs included (exit 2 on the command line).
    """
    from adn_edge.quantize.runner import QuantizeOptions

    t_start = time.perf_counter()
    opts = options or QuantizeOptions()
    method = opts.checked_method()
    directory = Path(directory)
    _segments(manifest_mod.load(directory))  # clear errors before the lock creates anything
    ensure_writable_dir(directory)
    with writing(directory, "quantize --segments"):
        return _Run(directory, calib, opts, method, iterate, log, t_start).run()


class _Run:
    """One ``quantize --segments`` under the lock: the manifest read inside it."""

    def __init__(self, directory: Path, calib: str | os.PathLike[str], opts: QuantizeOptions, method: qdq.Method,
                 iterate: Iterate | None, log: Log | None, t_start: float) -> None:
        self.directory = directory
        self.man = manifest_mod.load(directory)
        self.seg = _segments(self.man)
        self.parts: list[dict[str, Any]] = self.seg["parts"]
        self.count = len(self.parts)
        self.arch = str(self.man["arch"])
        self.opts = opts
        self.method = method
        self.iterate = iterate or (lambda items, _desc: items)
        self.say = log or (lambda _msg: None)
        self.t_start = t_start
        static = _static_batch(self.man)
        self.static = static is not None
        self.batch = static or CALIB_BATCH
        self.data = CalibrationData.open(calib, self.man, opts.samples)
        self.report = SegmentsQuantizeReport(directory, self.arch, method.record(), self.data.record(),
                                             warnings=list(self.data.warnings))

    # ------------------------------------------------------------------ steps

    def run(self) -> SegmentsQuantizeReport:
        import onnx

        for w in self.data.warnings:
            self.say(f"warning: {w}")
        fp32_paths: dict[tuple[int, str], Path] = {}
        for part in self.parts:
            for kind in SEGMENT_KINDS.values():
                rec = part["files"][kind]
                path = manifest_mod.verify_file(self.directory, rec)
                qdq.check_not_quantized(onnx.load(str(path), load_external_data=False),
                                        f"The float32 graph of segment {part['index']} ({kind}, {rec['path']})")
                fp32_paths[(int(part["index"]), kind)] = path
        forms = self._plan()
        todo = [f for f in forms if f.status == "quantized"]
        ranges = self._ranges(forms, todo, fp32_paths)
        for k in range(self.count):
            now = [f for f in todo if f.index == k]
            for f in now:
                self._quantize(f, fp32_paths[(k, f.kind)], ranges)
            if now:
                manifest_mod.save(self.directory, self.man)  # after each part: an interruption keeps it
        self.report.forms = forms
        for f in forms:
            for w in f.warnings:
                self.report.warnings.append(f"{f.key}: {w}")
                self.say(f"warning: {f.key}: {w}")
        self._accuracy(bool(todo))
        manifest_mod.save(self.directory, self.man)
        self.report.seconds = time.perf_counter() - self.t_start
        return self.report

    def _plan(self) -> list[FormQuantization]:
        """Every form, marked ``up to date`` (kept) or ``quantized`` (to do)."""
        forms = []
        for part in self.parts:
            k = int(part["index"])
            for kind in SEGMENT_KINDS.values():
                name = segment_file(self.arch, k, kind, VARIANT)
                old = ((part.get("quantization") or {}).get(kind)) or {}
                rec = (part.get(FILES_KEY) or {}).get(kind)
                kept = (not self.opts.force and old.get("settings") == _settings(self.parts, k, kind, self.method,
                                                                                  self.data)
                        and rec is not None and _verifies(self.directory, rec))
                cal = (old.get("calibration") or {}) if kept else {}
                forms.append(FormQuantization(k, kind, "up to date" if kept else "quantized", name, "-",
                                              stats=dict(old.get("qdq") or {}) if kept else {},
                                              prefixes=list(cal.get("prefixes") or []),
                                              inputs=int(cal.get("inputs") or 0)))
        return forms

    def _cache(self, k: int, kind: str) -> tuple[Path, str]:
        """(ranges cache file, its key) of a form: its graph, the images, the float32
        graphs before it, the method and the sample count."""
        part_key = segment_key(k, kind)
        data_key = hashlib.sha256((self.data.fingerprint() + _prefix_digest(self.parts, k)).encode()).hexdigest()
        key = qdq.cache_key(str(self.parts[k]["files"][kind]["sha256"]), data_key, self.method, self.data.count)
        return self.directory / ranges_cache_name(self.arch, part_key, self.method.name), key

    def _ranges(self, forms: list[FormQuantization], todo: list[FormQuantization],
                fp32_paths: dict[tuple[int, str], Path]) -> dict[tuple[int, str], Path]:
        """The ranges caches quantisation reads: of every form to quantise, and of the
        full form of the parts whose input range is a boundary (part k's own input, and
        part k+1's input, which part k's output is quantised on). Reused when the key
        matches, else calibrated now, all missing forms in one walk of the prefix tree."""
        by_key = {(f.index, f.kind): f for f in forms}
        required: set[tuple[int, str]] = set()
        for f in todo:
            required.add((f.index, f.kind))
            if f.index >= 1:
                required.add((f.index, "full"))
            if f.index + 1 < self.count:
                required.add((f.index + 1, "full"))
        paths: dict[tuple[int, str], Path] = {}
        need: list[tuple[int, str]] = []
        for key in sorted(required):
            path, cache_key = self._cache(*key)
            paths[key] = path
            form = by_key[key]
            quantizing = form.status == "quantized"
            if self.opts.use_cache and qdq.cache_valid(path, cache_key):
                if quantizing:
                    form.cache = "hit"
                    cached = read_json(path, "calibration cache").get("adn_edge") or {}
                    form.prefixes = list(cached.get("prefixes") or _prefixes(form.index))
                    form.inputs = int(cached.get("inputs") or self.data.count * 2 ** form.index)
            else:
                if quantizing:
                    form.cache = "miss"
                need.append(key)
        if need:
            self._calibrate(need, by_key, fp32_paths)
        return paths

    def _calibrate(self, need: list[tuple[int, str]], by_key: dict[tuple[int, str], FormQuantization],
                   fp32_paths: dict[tuple[int, str], Path]) -> None:
        """One walk of the prefix tree per group of images, feeding every form in
        ``need`` the features of every prefix of its part; their ranges caches written."""
        t0 = time.perf_counter()
        depth = max(k for k, _ in need)
        by_part: dict[int, list[str]] = {}
        for k, kind in need:
            by_part.setdefault(k, []).append(kind)
        chain = Chain(self.directory, self.parts, "files", self.opts.threads, self.batch, self.static)
        calibrators: dict[tuple[int, str], qdq.RangeCalibrator] = {}
        seen: dict[tuple[int, str], list[str]] = {key: [] for key in need}
        step = "calibrate"
        try:
            for key in need:
                calibrators[key] = qdq.RangeCalibrator(fp32_paths[key], self.method)

            def feed(prefix: str, v: np.ndarray) -> None:
                k = len(prefix)
                batches = _slices(v, self.batch, self.static)
                for kind in by_part.get(k, []):
                    calibrators[(k, kind)].feed(str(self.parts[k]["input"]), batches)
                    if prefix not in seen[(k, kind)]:
                        seen[(k, kind)].append(prefix)

            images = self.data.array()
            group = self.batch * GROUP_BATCHES
            starts = list(range(0, len(images), group))
            step = "run the float32 segments for"
            for i in self.iterate(starts, f"calibrate {self.arch} segments over all prefixes "
                                          f"({self.method.name})"):
                walk(chain.run, images[i:i + group], depth, feed)
            step = "calibrate"
            for key in need:
                k, kind = key
                path, cache_key = self._cache(k, kind)
                cal = calibrators[key]
                src = self.parts[k]["files"][kind]
                cal.write(path, {"key": cache_key, "graph_sha256": src["sha256"], "graph": src["path"],
                                 "prefix_sha256": _prefix_digest(self.parts, k), "calibration": self.data.source,
                                 "fingerprint": self.data.fingerprint(), "method": self.method.record(),
                                 "samples": self.data.count, "prefixes": seen[key], "inputs": cal.inputs})
                form = by_key[key]
                if form.status == "quantized":
                    form.prefixes, form.inputs = list(seen[key]), cal.inputs
        except (AdnProblem, KeyboardInterrupt):
            raise
        except Exception as exc:  # ONNX Runtime raises plain exceptions
            raise AdnFailure(f"ONNX Runtime could not {step} the segment graphs of {self.directory}: "
                             f"{type(exc).__name__}: {_first_line(exc)}. Nothing was written.") from exc
        finally:
            for cal in calibrators.values():
                cal.close()
            chain.close()
        calibrated = [by_key[key] for key in need if by_key[key].status == "quantized"]
        for form in calibrated:
            form.seconds += (time.perf_counter() - t0) / len(calibrated)

    def _aligned_ranges(self, k: int, kind: str, fmodel: Any, ranges: dict[tuple[int, str], Path],
                        out: Path) -> dict[str, Any]:
        """Write to ``out`` the ranges part k's ``kind`` form is quantised with: its own,
        except at the boundaries, where both forms of part k and of the parts around it
        use one range: the input's from part k's calibration (identical for both forms,
        which see the same features), the output's (and the tensors feeding it through a
        Relu) from part k+1's input. Part k's output then lies on the grid part k+1
        quantises its input to, so the hand-over rounds once, as inside one graph, not
        twice on two slightly different scales. Returns what was shared, for the record."""
        import json

        part = self.parts[k]
        cache = read_json(ranges[(k, kind)], "calibration cache")
        data = cache["data"]
        shared: dict[str, Any] = {}
        if k >= 1:
            name = str(part["input"])
            src = read_json(ranges[(k, "full")], "calibration cache")["data"].get(name)
            if src is not None and name in data:
                data[name] = src
                shared["input"] = {"tensors": [name], "range_of": f"{segment_key(k, 'full')} input"}
        if k + 1 < self.count:
            name = str(self.parts[k + 1]["input"])
            src = read_json(ranges[(k + 1, "full")], "calibration cache")["data"].get(name)
            tensors = [t for t in boundary_tensors(fmodel.graph, str(part["output"])) if t in data]
            if src is not None and tensors:
                for t in tensors:
                    data[t] = src
                shared["output"] = {"tensors": tensors, "range_of": f"{segment_key(k + 1, 'full')} input"}
        out.write_text(json.dumps(cache))
        return shared

    def _quantize(self, f: FormQuantization, fp32_path: Path, ranges: dict[tuple[int, str], Path]) -> None:
        import tempfile

        import onnx

        t0 = time.perf_counter()
        part = self.parts[f.index]
        src = part["files"][f.kind]
        cache_file = ranges[(f.index, f.kind)]
        fmodel = onnx.load(str(fp32_path))
        try:
            with tempfile.TemporaryDirectory(prefix="adn-seg-ranges-") as tmp:
                aligned = Path(tmp) / "ranges.json"
                shared = self._aligned_ranges(f.index, f.kind, fmodel, ranges, aligned)
                qmodel = qdq.quantize_graph(fp32_path, aligned, self.method)
        except (AdnProblem, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise AdnFailure(f"ONNX Runtime could not quantise segment {f.index} ({f.kind}, {src['path']}): "
                             f"{type(exc).__name__}: {_first_line(exc)}. Nothing was written for it; the parts "
                             "before it are saved.") from exc
        meta = {"adn.precision": "int8", "adn.quant.format": "QDQ", "adn.quant.method": self.method.name,
                "adn.quant.samples": self.data.count, "adn.quant.calibration": self.data.source,
                "adn.quant.fingerprint": self.data.fingerprint(), "adn.quant.source_sha256": src["sha256"],
                "adn.quant.features": f"all {2 ** f.index} prefixes" if f.index else "images",
                "adn.quant.prefix_sha256": _prefix_digest(self.parts, f.index),
                "adn.quant.library": f"onnxruntime {qdq.library_record()['version']}"}
        if f.index == self.count - 1:
            # The chain's output (logits) leaves the last part in float: no 8-bit grid, no ties.
            shared["float_output"] = qdq.float_outputs(qmodel)
        qmodel = qdq.finalize(qmodel, fmodel, meta)
        stats = qdq.check_qdq(qmodel, f"The INT8 graph of segment {f.index} ({f.kind})")
        if stats.float_layers:
            f.warnings.append(f"{len(stats.float_layers)} weighted layer(s) stayed float: "
                              f"{', '.join(stats.float_layers[:3])}")
        write_bytes(self.directory / f.file, qmodel.SerializeToString())
        part.setdefault(FILES_KEY, {})[f.kind] = manifest_mod.file_record(self.directory, f.file)
        f.stats = stats.record()
        part.setdefault("quantization", {})[f.kind] = {
            "settings": _settings(self.parts, f.index, f.kind, self.method, self.data),
            "calibration": {**self.data.record(), "prefixes": list(f.prefixes), "inputs": f.inputs,
                            "features": f"images through segments 0..{f.index - 1} in all {2 ** f.index} "
                                        "combinations of their forms" if f.index else "images",
                            "shared_ranges": shared},
            "method": self.method.record(), "library": qdq.library_record(),
            "cache": {"path": cache_file.name, "key": self._cache(f.index, f.kind)[1],
                      "sha256": sha256_file(cache_file)},
            "qdq": f.stats,
        }
        f.seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ accuracy

    def _accuracy(self, changed: bool) -> None:
        """INT8 chains against float32 chains, every sub-network: on the evaluation data
        when there is some (top-1, agreement), else the logit error on calibration images."""
        from adn_edge.quantize.runner import _accuracy_warnings, _eval_spec

        codes = subnet_mod.all_codes(self.count)
        eval_spec = _eval_spec(self.opts, self.data)
        eval_set: acc_mod.EvalSet | None = None
        if eval_spec is not None:
            eval_set = acc_mod.load_eval_set(eval_spec, self.directory, int(self.man["num_classes"]),
                                             self.opts.eval_samples)
        else:
            self.report.notes.append("no evaluation data: INT8 top-1 was not measured (pass --data builtin or an "
                                     "ImageFolder directory); the logit error is on calibration images")
        quant = self.seg.get("quantization") or {}
        prev = quant.get("accuracy") if isinstance(quant.get("accuracy"), dict) else None
        recorded = {c: (self.seg.get("subnets") or {}).get(c, {}).get("rel_err_int8") for c in codes}
        same = (not changed and prev is not None and eval_set is not None
                and prev.get("dataset") == eval_set.name and prev.get("split") == eval_set.split
                and prev.get("samples") == len(eval_set) and prev.get("threshold") == self.opts.drop_threshold
                and set(prev.get("subnets") or {}) == set(codes))
        if same:
            assert prev is not None
            for code in codes:
                comp = _comparison_from_record(prev["subnets"][code])
                self.report.subnets.append(ChainAccuracy(code, comp.rel_err, comp))
        elif not changed and eval_set is None and all(isinstance(v, (int, float)) for v in recorded.values()):
            # nothing new and nothing to measure on: the recorded figures stand (accuracy included)
            for code in codes:
                self.report.subnets.append(ChainAccuracy(code, float(recorded[code])))
        else:
            images = eval_set.images if eval_set is not None else self.data.array()[:PARITY_SAMPLES]
            fp32 = Chain(self.directory, self.parts, "files", self.opts.threads, self.batch, self.static)
            int8 = Chain(self.directory, self.parts, FILES_KEY, self.opts.threads, self.batch, self.static)
            try:
                ref = fp32.logits(images)
                fp32.close()
                out = int8.logits(images)
            except (AdnProblem, KeyboardInterrupt):
                raise
            except Exception as exc:
                raise AdnFailure(f"ONNX Runtime could not run the INT8 segment chains of {self.directory}: "
                                 f"{type(exc).__name__}: {_first_line(exc)}. The INT8 graphs are written and "
                                 "recorded; their accuracy is not.") from exc
            finally:
                fp32.close()
                int8.close()
            for code in codes:
                measured = acc_mod.compare(ref[code], out[code], eval_set, self.opts.drop_threshold) \
                    if eval_set is not None else None
                rel = measured.rel_err if measured is not None else acc_mod.rel_err(out[code], ref[code])
                self.report.subnets.append(ChainAccuracy(code, rel, measured))
            self.seg["parity_int8"] = {
                "rel_err_max": max(s.rel_err for s in self.report.subnets),
                "tolerance": defaults.INT8_REL_TOLERANCE, "samples": len(images), "reference": "files",
                "data": eval_set.name if eval_set is not None else self.data.source, "runtime": "onnxruntime-cpu"}
            subs = self.seg.setdefault("subnets", {})
            for s in self.report.subnets:
                subs.setdefault(s.code, {})["rel_err_int8"] = s.rel_err
            self.seg["quantization"] = {
                "calibration": self.data.record(), "method": self.method.record(), "library": qdq.library_record(),
                "accuracy": None if eval_set is None else {
                    "dataset": eval_set.name, "split": eval_set.split, "samples": len(eval_set),
                    "threshold": self.opts.drop_threshold, "reference": "files (float32 segments), same images",
                    "subnets": {s.code: s.accuracy.record() for s in self.report.subnets
                                if s.accuracy is not None}},
            }
        for s in self.report.subnets:
            warnings = _accuracy_warnings(s.accuracy) if s.accuracy is not None else []
            if not np.isfinite(s.rel_err) or s.rel_err > defaults.INT8_REL_TOLERANCE:
                warnings.append(f"INT8 segment logits differ from FP32 by {s.rel_err:.1%} (relative), more than "
                                f"the {defaults.INT8_REL_TOLERANCE:.0%} expected; check that the calibration images "
                                "are representative")
            for w in warnings:
                self.report.warnings.append(f"{s.code} (segmented): {w}")
                self.say(f"warning: {s.code} (segmented): {w}")
        if eval_set is not None:
            path, notes = self._write_eval([s for s in self.report.subnets if s.accuracy is not None])
            self.report.eval_files = [path.name]
            self.report.notes += notes

    def _write_eval(self, rows: list[ChainAccuracy]) -> tuple[Path, list[str]]:
        """``eval-int8-segmented.json``: the eval schema, with the float32 chain's figures beside."""
        first = rows[0].accuracy
        assert first is not None
        rec: dict[str, Any] = {
            "schema": acc_mod.SCHEMA, "dataset": first.dataset, "split": first.split, "samples": first.samples,
            "source": SOURCE, "recalibrated": self.man.get("recalibration") is not None, "precision": "int8",
            "segmented": True, "reference": "float32 segment chains on the same images",
            "identity": identity(self.man, [r.code for r in rows]), "subnets": {}}
        for r in rows:
            c = r.accuracy
            assert c is not None
            rec["subnets"][r.code] = {
                "top1": round(c.top1_int8, 4), "top5": None if c.top5_int8 is None else round(c.top5_int8, 4),
                "samples": c.samples, "top1_fp32": round(c.top1_fp32, 4),
                "top5_fp32": None if c.top5_fp32 is None else round(c.top5_fp32, 4),
                "agreement": round(c.agreement, 4), "drop": round(c.drop, 4)}
        return write_eval_record(self.directory, rec, EVAL_VARIANT)


def _verifies(directory: Path, record: dict[str, Any]) -> bool:
    try:
        manifest_mod.verify_file(directory, record)
    except AdnError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _comparison_from_record(rec: dict[str, Any]) -> acc_mod.Comparison:
    from adn_edge.quantize.runner import _comparison_from_record as from_record

    return from_record(rec)


def iter_prefix_features(directory: str | os.PathLike[str], images: np.ndarray, k: int,
                         threads: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(prefix, features)`` for every prefix of part ``k``: what part k's calibration
    is fed (all 2^k combinations of the forms of parts 0..k-1, float32, ONNX Runtime).
    For inspection and tests; :func:`quantize_segments` walks the same tree."""
    directory = Path(directory)
    man = manifest_mod.load(directory)
    parts = _segments(man)["parts"]
    static = _static_batch(man)
    chain = Chain(directory, parts, "files", threads, static or CALIB_BATCH, static is not None)
    found: list[tuple[str, np.ndarray]] = []

    def keep(prefix: str, v: np.ndarray) -> None:
        if len(prefix) == k:
            found.append((prefix, v))

    try:
        walk(chain.run, np.asarray(images, dtype=np.float32), k, keep)
    finally:
        chain.close()
    yield from found
