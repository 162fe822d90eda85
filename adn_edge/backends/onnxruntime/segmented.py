"""Segmented mode: a sub-network run as a chain of per-stage graphs.

The model directory's ``segments`` (written by :mod:`adn_edge.export.segments`)
hold part k of every sub-network in its two forms, full and skipped: 2*S graphs
instead of 2^S. Running code ``c`` chains part k in form ``c[k]`` for every k, so
all 2^S sub-networks are available from 2*S sessions, weights shared across them
the same way as the monolithic backend does.

When to use which (``benchmarks/bench_cpu_modes.py``, ResNet50-ADN, CPU, batch 1,
2-core AMD EPYC; table in README "Results"):

* On ONNX Runtime's CPU provider segments are the default (``EngineSwitcher.open``'s
  ``default_segmented``): each form's weights live in one place, so the full
  optimisation level (NCHWc, pre-packing: per-session weight copies) costs nothing
  extra: ~190 MB with all 16 sub-networks of ResNet50-ADN open, against 1344 MB for 16
  monolithic ``all`` sessions and 208 MB for 16 weight-sharing ``extended`` ones
  (1.2-1.3x slower).
* There, too, the parts run as ONE session by default (``single_session``, see
  :mod:`.switch_graph`): a chain of sessions hands the cores from pool to pool at every
  stage boundary (1.16x monolithic at 2 threads), one session does not.
  ``single_session=False`` keeps the chain; weights shared across sessions
  (``check_sharing``) and CUDA always use it. Corrected segments feed their corrections
  as inputs of the one graph.
* A graph boundary per stage means no fusion across it and one activation hand-over,
  small next to a ResNet stage.
* Segments pay off where weights cannot be shared across graphs: TensorRT engines
  embed theirs, so 2^S monolithic engines hold 2^S copies while the 2*S segment
  engines (``adn-edge build --segments``, run by ``tensorrt-segmented`` in
  :mod:`~adn_edge.backends.tensorrt.runner`) hold each weight about once. Also
  where 2^S files do not fit the storage or the build time (2*S builds instead of
  2^S), and for models with more stages (MobileNetV2-ADN: 32 sub-networks from 10
  graphs). On a GPU the cost is S engine launches per inference instead of one and
  no fusion across stage boundaries; ``cuda_graphs=True`` turns the chain back
  into one launch.

The code is read once, at the start of :meth:`run`: an inference never mixes the
parts of two sub-networks, whatever ``switch`` does meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.backends.onnxruntime.runner import BATCH_OPTIONS, SharedSessionsBackend
from adn_edge.backends.onnxruntime.sessions import SessionFactory, opening, ort_unavailable, perturbation_probe, \
    run_into_own_buffer, split_options
from adn_edge.errors import AdnError
from adn_edge.modeldir.graph_identity import for_segment
from adn_edge.modeldir import manifest as manifest_mod
from adn_edge.modeldir.manifest import SEGMENT_FILE_KEYS, SEGMENT_KINDS
from adn_edge.runtime.backend import register_backend

FILE_KEYS = SEGMENT_FILE_KEYS
"""Precision -> the parts' key of its graphs: ``files`` (float32), ``files_fp16``
(``export --segments --fp16``), ``files_int8`` (``quantize --segments``)."""

_MAKE = {"fp16": "Export them with `adn-edge export CHECKPOINT --segments --fp16 --out DIR`",
         "int8": "Make them with `adn-edge quantize DIR --segments --calib IMAGES` (each part calibrated on the "
                 "activations of every combination of the forms before it)"}


def files_key(seg: dict[str, Any], precision: str | None) -> str:
    """The parts' key holding the graphs of ``precision``: fp32, the float16 twins of
    ``export --segments --fp16``, or the Q/DQ INT8 graphs of ``quantize --segments``.
    INT8 graphs quantised from other float32 segment graphs than the listed ones (a
    re-export kept their record) are refused."""
    p = (precision or "fp32").lower()
    if p not in FILE_KEYS:
        raise AdnError(f"Segmented mode runs fp32, fp16 or int8 segment graphs; precision={precision!r} is not "
                       "available.", "Open with precision='fp32', 'fp16' or 'int8'.")
    key = FILE_KEYS[p]
    if any(key not in part for part in seg["parts"]):
        raise AdnError(f"This model directory has no {p} segment graphs.", f"{_MAKE[p]}, or open precision='fp32'.")
    if p == "int8":
        stale = manifest_mod.stale_int8_segments(seg)
        if stale:
            raise AdnError(f"The INT8 segment graphs {', '.join(stale)} were quantised from other float32 segment "
                           "graphs than the ones this manifest lists (the segments were re-exported since).",
                           f"{_MAKE['int8']} again, or open precision='fp32'.")
    return key


SEGMENT_CPU_DEFAULTS: dict[str, Any] = {"graph_optimization": "all", "share_weights": False, "prepack": True}
"""Defaults of segment sessions on the CPU execution provider (explicit options win;
measured by ``benchmarks/bench_cpu_modes.py``, README "Results"). Each segment form's weights live in
one session only, so there is nothing to share and ONNX Runtime's full optimisation
(the NCHWc layout, pre-packed GEMM weights: per-session copies that make 16
monolithic sessions 6x larger) costs no extra memory: as fast as monolithic ``all``
at the memory of shared monolithic graphs (``benchmarks/bench_cpu_modes.py``)."""


def segment_defaults(options: dict[str, Any], sharing: bool = False) -> dict[str, Any]:
    """``options`` completed with the measured defaults of segment sessions (explicit
    options always win). ``sharing`` (``check_sharing=True``: the caller wants weights
    shared, and proven so) keeps ONNX Runtime's sharing configuration instead of the
    CPU defaults, which share nothing."""
    device = str(options.get("device", "auto")).lower()
    cpu = not sharing and (device == "cpu" or (device == "auto" and not cuda_available()))
    return {**(SEGMENT_CPU_DEFAULTS if cpu else {}), **options}


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _checked_io(sess: Any, rec: dict[str, Any], part: dict[str, Any], corrected: bool) -> list[str]:
    """The inputs of a segment session besides the activation (correction inputs, which
    only corrected segments may have), after checking its inputs and outputs against
    the manifest's part."""
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    extra = [n for n in ins if n != part["input"]]
    if part["input"] not in ins or outs != [part["output"]] or (extra and not corrected):
        why = " (correction inputs, but the manifest lists no corrections)" if extra else ""
        raise AdnError(f"{rec['path']} has inputs {ins} and outputs {outs}{why}, but the manifest "
                       f"describes {part['input']!r} -> {part['output']!r}.", "Re-export the segments.")
    return extra


def _check_correction_shapes(corr: list[dict[str, dict[str, np.ndarray]]], shapes: dict[str, list[Any]],
                             where: str) -> None:
    """Every correction vector has the shape its graph input declares."""
    for per in corr:
        for prefix, feed in per.items():
            bad = [n for n, a in feed.items() if list(a.shape) != shapes[n]]
            if bad:
                raise AdnError(f"{where}: the corrections {bad[:3]} of the sub-networks starting "
                               f"{prefix} do not have the shapes the segment graphs take "
                               f"({[shapes[n] for n in bad[:3]]}).", "Re-export the segments.")


@register_backend("onnxruntime-segmented", available=ort_unavailable, priority=19)
class SegmentedOnnxRuntimeBackend(SharedSessionsBackend):
    """ONNX Runtime over segment graphs. Options: as the ``onnxruntime`` backend
    (``device``, ``threads``, ``thread_pool``, ``graph_optimization``, ``prepack``,
    ``share_weights``, ``share_arena``, ``check_sharing``, ``max_batch``,
    ``arena_shrink_above``), ``precision`` (fp32, fp16 or
    int8, see :func:`files_key`; int8 pre-packs weights unless ``prepack=False``, as
    the ``onnxruntime`` backend does) and ``single_session`` (None: one session on the
    CPU where nothing needs the chain; True/False to choose; ``describe()`` says which
    and why)."""

    segmented = True

    @classmethod
    def artifacts(cls, manifest: dict[str, Any], codes: Sequence[str], **options: Any) -> list[dict[str, Any]]:
        seg = manifest_mod.running_segments(manifest)
        key = files_key(seg, options.get("precision"))
        return [part[key][kind] for part in seg["parts"] for kind in SEGMENT_KINDS.values()]

    def __init__(self, directory: Path, manifest: dict[str, Any], codes: Sequence[str], *,
                 precision: str | None = None, check_sharing: bool = False, single_session: bool | None = None,
                 **options: Any) -> None:
        super().__init__(directory, manifest, codes)
        seg = manifest_mod.running_segments(manifest)
        key = files_key(seg, precision)
        self.precision = (precision or "fp32").lower()
        factory_options = split_options(self._take_batch_options(options), BATCH_OPTIONS, "onnxruntime-segmented")
        if self.precision == "int8":
            # As the monolithic backend: integer kernels need their pre-packed weights.
            factory_options.setdefault("prepack", True)
        self.factory = SessionFactory(**segment_defaults(factory_options, sharing=check_sharing))
        self._one: tuple[Any, str, str] | None = None
        self._feeds: dict[str, dict[str, Any]] = {}
        self._chain: list[dict[str, tuple[Any, str, str]]] = []
        self._used: list[dict[str, set[str]]] = []
        self.file_bytes = 0
        corrected = manifest_mod.segment_corrections(seg)
        self.corrections = None if corrected is None else \
            {k: corrected.get(k) for k in ("reference", "threshold", "data", "samples")}
        # Corrected segments (export --segments --recalibrate): per (part, code prefix),
        # the BatchNorm corrections each graph takes as inputs besides the activation.
        self._corr: list[dict[str, dict[str, np.ndarray]]] | None = None
        self._corr_values: list[dict[str, dict[str, Any]]] | None = None
        self.single_session, self.single_session_reason = self._one_session(single_session, check_sharing)
        self._ortvalue = self.factory.ort.OrtValue.ortvalue_from_numpy
        with opening(self):
            if self.single_session:
                self._open_one_session(manifest, seg, key, corrected)
            else:
                self._open_chain(manifest, seg, key, corrected)
        if check_sharing and not self.verify_sharing()["ok"]:
            probe = self.sharing_probe
            self.close()
            raise AdnError(f"check_sharing: some segment sessions hold their own copy of shared weights ({probe}).")

    def _open_forms(self, manifest: dict[str, Any], seg: dict[str, Any], key: str, corrected: dict[str, Any] | None,
                    take: Callable[[int, str, Any, list[str]], None],
                    save_to: Callable[[int, str], str] | None = None) -> dict[str, list[Any]]:
        """Open a session on every part's forms, each file checked against the manifest
        (sha256, identity metadata, inputs and outputs) as it is read, and hand each to
        ``take(k, flag, session, shared names)``; ``save_to(k, kind)``: where ONNX Runtime
        writes the form it optimised. Sets ``self._corr`` for corrected segments (per part
        and code prefix, the BatchNorm corrections each graph takes as inputs besides the
        activation). Returns the correction inputs' shapes."""
        extra_inputs: dict[tuple[int, str], list[str]] = {}
        shapes: dict[str, list[Any]] = {}
        arrays = manifest_mod.read_segment_corrections(self.directory, seg)
        for part in seg["parts"]:
            k = int(part["index"])
            for flag, kind in SEGMENT_KINDS.items():
                rec = part[key][kind]
                sess, names, nbytes = self.factory.open_verified(
                    self.directory, rec, for_segment(manifest, k, kind), f"segment {k} ({kind})",
                    save_optimized=save_to(k, kind) if save_to else None)
                self.file_bytes += nbytes
                extra = _checked_io(sess, rec, part, corrected is not None)
                extra_inputs[(k, flag)] = extra
                shapes.update({i.name: list(i.shape) for i in sess.get_inputs() if i.name in extra})
                take(k, flag, sess, names)
        if corrected is not None:
            where = corrected["file"]["path"]
            self._corr = manifest_mod.correction_feeds(arrays, len(seg["parts"]), extra_inputs, where)
            _check_correction_shapes(self._corr, shapes, where)
        return shapes

    def _open_chain(self, manifest: dict[str, Any], seg: dict[str, Any], key: str,
                    corrected: dict[str, Any] | None) -> None:
        """A session per form; a run chains part k in the form its flag names."""
        self._chain = [{} for _ in seg["parts"]]
        self._used = [{} for _ in seg["parts"]]

        def take(k: int, flag: str, sess: Any, names: list[str]) -> None:
            part = seg["parts"][k]
            self._chain[k][flag] = (sess, part["input"], part["output"])
            self._used[k][flag] = set(names)

        self._open_forms(manifest, seg, key, corrected, take)
        if self._corr is not None:
            self._corr_values = [{p: {n: self._ortvalue(a) for n, a in feed.items()} for p, feed in per.items()}
                                 for per in self._corr]

    def _one_session(self, wanted: bool | None, check_sharing: bool) -> tuple[bool, str]:
        """Whether all parts run as one session (:mod:`.switch_graph`), and why."""
        why_not = None
        if self.factory.device != "cpu":
            why_not = "the one-session graph is built for ONNX Runtime's CPU provider"
        elif check_sharing or self.factory.share_weights:
            why_not = "weights shared across sessions (check_sharing / share_weights) need a chain of sessions"
        if wanted is None:
            return (why_not is None,
                    why_not or "one session on the CPU: one thread pool, one run per inference (measured faster "
                               "than a chain of sessions at 2+ threads, same memory)")
        if wanted and why_not:
            raise AdnError(f"single_session=True cannot be honoured: {why_not}.",
                           "Leave single_session unset (the backend picks), or set it to False.")
        return bool(wanted), "asked for (single_session=True)" if wanted else "asked for (single_session=False)"

    def _open_one_session(self, manifest: dict[str, Any], seg: dict[str, Any], key: str,
                          corrected: dict[str, Any] | None) -> None:
        """Every part's forms, optimised by ONNX Runtime here, composed into one graph
        and one session (see :mod:`.switch_graph`); corrected segments get their
        corrections as inputs of the one graph. Every run's inputs besides the batch
        (the flags, the corrections) are OrtValues made here, once per code."""
        from adn_edge.backends.onnxruntime.switch_graph import SwitchGraphBuilder, correction_code_feeds, flag_feeds

        builder = SwitchGraphBuilder()
        try:
            def take(k: int, flag: str, sess: Any, names: list[str]) -> None:
                part = seg["parts"][k]  # the session only wrote its optimised graph: not kept
                builder.add_form(k, SEGMENT_KINDS[flag], part["input"], part["output"])

            shapes = self._open_forms(manifest, seg, key, corrected, take, save_to=builder.path_for)
            data = builder.compose()
        finally:
            builder.close()
        sess, _ = self.factory.session(data, f"{self.directory} (segments as one graph)", optimization="disable")
        del data
        parts = seg["parts"]
        self._one = (sess, parts[0]["input"], parts[-1]["output"])
        feeds = flag_feeds(self.codes)
        if self._corr is not None:
            for code, corrections in correction_code_feeds(self.codes, self._corr, shapes).items():
                feeds[code].update(corrections)
        values: dict[int, Any] = {}  # one OrtValue per array: codes share most correction vectors
        self._feeds = {c: {n: values.setdefault(id(a), self._ortvalue(a)) for n, a in feed.items()}
                       for c, feed in feeds.items()}

    def _run_chunk(self, code: str, batch: np.ndarray, run_options: Any, own: bool) -> np.ndarray:
        if self._one is not None:
            sess, in_name, out_name = self._one
            feed = {in_name: self._ortvalue(batch), **self._feeds[code]}
            if own:
                return self._run_own(sess, feed, out_name, run_options)
            result: np.ndarray = sess.run_with_ort_values([out_name], feed, run_options)[0].numpy()
            return result
        chain = self._chain
        corr, corr_values = self._corr, self._corr_values
        if run_options is not None and self.factory.device == "cpu":
            # An arena-shrinking run (a small batch): every hand-over in our own buffers,
            # so that each part's shrink finds the arena empty (OrtValues would pin it).
            x = batch
            for k in range(len(chain)):
                sess, in_name, out_name = chain[k][code[k]]
                if corr is None:
                    x = run_into_own_buffer(sess, in_name, x, out_name, run_options)
                else:
                    x = self._run_own(sess, {in_name: x, **corr[k][code[:k + 1]]}, out_name, run_options)
            return x
        value = self._ortvalue(batch)
        last = len(chain) - 1
        for k in range(last + 1):
            sess, in_name, out_name = chain[k][code[k]]
            feed = {in_name: value} if corr_values is None else {in_name: value, **corr_values[k][code[:k + 1]]}
            if k == last and own:  # the logits the caller keeps must not pin the arena
                if corr_values is None:
                    return run_into_own_buffer(sess, in_name, value, out_name, run_options)
                return self._run_own(sess, feed, out_name, run_options)
            value = sess.run_with_ort_values([out_name], feed, run_options)[0]
        out: np.ndarray = value.numpy()
        return out

    def _run_own(self, sess: Any, feed: dict[str, Any], out_name: str, run_options: Any) -> np.ndarray:
        """:func:`~.sessions.run_into_own_buffer` for a graph with correction inputs
        besides the activation (numpy arrays or OrtValues, the activation first)."""
        out_meta = next(o for o in sess.get_outputs() if o.name == out_name)
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(out_meta.type)
        rest = list(out_meta.shape[1:])
        values = {n: self._ortvalue(v) if isinstance(v, np.ndarray) else v for n, v in feed.items()}
        if dtype is None or not all(isinstance(d, int) for d in rest):
            value = sess.run_with_ort_values([out_name], values, run_options)[0]
            return np.array(value.numpy(), copy=True)
        first = next(iter(values.values()))
        out = np.empty([int(first.shape()[0]), *rest], dtype=dtype)
        binding = sess.io_binding()
        for name, v in values.items():
            binding.bind_ortvalue_input(name, v)
        binding.bind_output(out_name, "cpu", 0, dtype, list(out.shape), out.ctypes.data)
        sess.run_with_iobinding(binding, run_options)
        return out

    def verify_sharing(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Perturbation proof (see :func:`perturbation_probe`) over whole chains of the
        first and last open sub-networks: by default the first and last float tensors
        that both chains use (the stem convolution and the classifier)."""
        if self._one is not None:
            self.sharing_probe = {"ok": True, "single_session": True,
                                  "note": "one session holds every weight once; nothing is shared across sessions"}
            return self.sharing_probe
        units = list(dict.fromkeys([self.codes[0], self.codes[-1]]))
        if names is None:
            arrays = self.factory.shared.arrays
            common = set.intersection(*(self._names_of(u) for u in units))
            # ndim > 0: INT8 graphs hold scalar scales (float, 0-d), which the probe cannot bump in place
            ordered = [n for n in arrays if n in common and arrays[n].dtype.kind == "f" and arrays[n].ndim > 0]
            names = list(dict.fromkeys(ordered[:1] + ordered[-1:]))
        shape = [1 if d is None else int(d) for d in self.manifest["input"]["shape"]]
        batch = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        self.sharing_probe = perturbation_probe(self.run, units, names, self.factory.shared, batch)
        return self.sharing_probe

    def _names_of(self, code: str) -> set[str]:
        return set().union(*(self._used[k][flag] for k, flag in enumerate(code)))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["segments"] = 2 * len(manifest_mod.running_segments(self.manifest)["parts"])
        d["segment_corrections"] = self.corrections
        d["single_session"] = self.single_session
        d["single_session_reason"] = self.single_session_reason
        return d

    def _drop_sessions(self) -> None:
        self._one = None
        for forms in getattr(self, "_chain", []):
            forms.clear()
        self._corr_values = None
