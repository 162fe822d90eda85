"""Segmented export: each stage in its two forms, instead of every sub-network whole.

A model with S skippable stages has 2^S sub-networks, but part k of any of them
depends only on flag k (:meth:`ADNModel.static_stages`). So 2*S graphs, part k
"full" (flag 1) and "skip" (flag 0), chained in code order, compute every
sub-network: ``<arch>_seg{k}_{full|skip}.onnx``. Part 0 carries the stem and part
S-1 the head, so there are no separate stem/head graphs (2*S, not 2*S+2).

Why bother when ONNX Runtime already shares weights across the 2^S monolithic
sessions (``onnxruntime_backend``)? Because not every runtime can: TensorRT engines
embed their weights, so 16 ResNet-50 engines hold 16 copies, while the 8 segment
engines hold each tensor once. The cost is a graph boundary per stage (no fusion
across it, one more launch, the activation handed over between graphs); the
runtime's ``segmented=True`` mode and ``benchmarks/bench_switcher.py`` measure it.

Graphs chain by tensor name: part 0 reads ``input``, part k writes ``x{k+1}``,
which part k+1 reads, and part S-1 writes ``logits``. Initializers carry the same
stable names as in the monolithic graphs (docs/model-directory.md), because they are
built with the same :class:`~adn_edge.materialize.Folder`.

Like the monolithic export, nothing is written unless every one of the 2^S chains
matches the ADN model's own forward (float64 relative error within tolerance);
then the files are written atomically and recorded under the manifest's top-level
``segments`` key (``files_fp16``, ``parity_fp16`` and ``rel_err_fp16`` only with
``ExportOptions.fp16``: the ``<arch>_seg{k}_{kind}.fp16.onnx`` twins, float16 inside
and float32 at every boundary, which TensorRT 11's strongly typed fp16 segment
engines are built from)::

    "segments": {"schema": 1, "count": S, "opset": 17,
      "parts": [{"index": 0, "input": "input", "output": "x1",
                 "input_shape": [null, 3, 224, 224], "output_shape": [null, 256, 56, 56],
                 "files": {"full": {"path": "resnet50_seg0_full.onnx", "sha256": ..., "bytes": ...},
                           "skip": {...}},
                 "files_fp16": {"full": {"path": "resnet50_seg0_full.fp16.onnx", ...}, "skip": {...}}}, ...],
      "parity": {"rel_err_max": 2e-7, "tolerance": 1e-4, "samples": 2, "runtime": "onnxruntime-cpu"},
      "parity_fp16": {"rel_err_max": 4e-4, "tolerance": 2e-2, "samples": 2, "runtime": "onnxruntime-cpu"},
      "subnets": {"1010": {"gmacs": ..., "params": ..., "rel_err": ..., "rel_err_fp16": ...}, ...},
      "weights": {"bytes_unique": ..., "bytes_total": ...}}

Recalibrated segments (``export --segments --recalibrate DATA``) cannot fold each
sub-network's own BatchNorm statistics into the weights (part k's would depend on
the whole prefix); they fold reference statistics instead and take the difference as
per-channel graph inputs, computed for every prefix at export and stored in
``<arch>_seg_corrections.npz`` (:mod:`adn_edge.export.corrections`; recorded as
``segments.corrections``). Parity then compares every chain, fed its corrections,
with the PyTorch model recalibrated for that sub-network. Recalibrated segments and
recalibrated monolithic graphs share a directory only when both used the same data
and samples; plain segments never sit beside recalibrated graphs, nor corrected ones
beside plain graphs (:func:`refuse_recalibration`). A re-export into a directory
whose manifest is kept (same checkpoint, input shape, opset and recalibration) keeps
what it does not rewrite, TensorRT engine records included, as the monolithic export
keeps a sub-network's other files.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from adn_edge import __version__, subnet
from adn_edge.modeldir import manifest
from adn_edge.errors import AdnError, ParityError
from adn_edge.export import corrections as corr
from adn_edge.export import onnx_graph as og
from adn_edge.export.exporter import Exporter, ExportOptions, fp16_twin
from adn_edge.export.parity import compare, reference_logits
from adn_edge.fileio import write_bytes
from adn_edge.materialize import stable_names
from adn_edge.models.base import ADNModel
from adn_edge.models.folding import Folder
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.names import segment_file

SCHEMA = 1
KINDS = manifest.SEGMENT_KINDS
FORMS = {"fp32": ("", ""), "fp16": (".fp16", "_fp16")}
"""Precision -> (file name variant, suffix of its manifest keys ``files``, ``parity``, ``rel_err``)."""

_WHY_NOT_MIXED = (
    "recalibration gives each sub-network its own BatchNorm statistics, so recalibrated and un-recalibrated "
    "graphs of the same codes are two different models, and a switcher's segmented and monolithic modes (and "
    "the parity figures) would silently disagree")
_RECALIBRATION_FIX = (
    "Export into another directory (`--out OTHER_DIR`), or export the segments with the same recalibration as "
    "the graphs already there (`adn-edge export CHECKPOINT --segments --recalibrate DATA --recal-samples N`: "
    "the segments then carry per-sub-network statistics as corrections).")


def corrections_file(arch: str) -> str:
    """The file of a corrected segment export's per-prefix statistics."""
    return f"{arch}_seg_corrections.npz"


def io_names(index: int, count: int) -> tuple[str, str]:
    """(input, output) tensor names of part ``index`` of ``count``."""
    return (og.INPUT_NAME if index == 0 else f"x{index}",
            og.OUTPUT_NAME if index == count - 1 else f"x{index + 1}")


def refuse_recalibration(recalibration: bool | Mapping[str, Any] | None, out_dir: str | Path) -> None:
    """Refuse segments that would be a second, different model beside the graphs of ``out_dir``.

    ``recalibration``: None/False for plain segments, or this export's recalibration
    (``{"data": ..., "samples": ...}``, ``samples`` None while not known yet; ``True``
    when neither is known). Plain segments are refused beside recalibrated graphs,
    corrected (recalibrated) segments beside un-recalibrated graphs or graphs
    recalibrated on other data or samples. Called before anything is read or
    written, so a refused export leaves the directory as it was.
    """
    if not manifest.path_in(out_dir).exists():
        return
    try:
        old = manifest.load(out_dir)
    except AdnError:
        return  # unreadable: the exporter starts a fresh manifest, nothing is mixed
    recal = old.get("recalibration")
    data = recal.get("data") if isinstance(recal, dict) else None
    if not recalibration:
        if recal is not None:
            raise AdnError(f"{str(out_dir)!r} holds sub-networks exported with BatchNorm recalibration (data: "
                           f"{data!r}), and un-recalibrated segments there would be a second, different model in "
                           f"the same directory: {_WHY_NOT_MIXED}.", _RECALIBRATION_FIX)
        return
    wanted = recalibration if isinstance(recalibration, Mapping) else {}
    if recal is None:
        if old.get("subnets") or old.get("segments"):
            raise AdnError(f"{str(out_dir)!r} holds graphs exported without BatchNorm recalibration, and "
                           "recalibrated segments there would be a second, different model in the same directory: "
                           f"{_WHY_NOT_MIXED}.",
                           "Export into another directory (`--out OTHER_DIR`), or leave --recalibrate out to add "
                           "plain segments beside the plain graphs.")
        return
    same = data == wanted.get("data", data) and (wanted.get("samples") is None
                                                 or recal.get("samples") == wanted.get("samples"))
    if not same:
        raise AdnError(f"{str(out_dir)!r} holds sub-networks recalibrated on {data!r} ({recal.get('samples')} "
                       f"samples), and segments recalibrated on {wanted.get('data')!r} "
                       f"({wanted.get('samples') or 'other'} samples) there would be a second, different model in "
                       "the same directory.",
                       "Export into another directory (`--out OTHER_DIR`), or recalibrate the segments on the same "
                       "data and --recal-samples as the graphs already there.")


def _trace(part: nn.Module, example: torch.Tensor, names: tuple[str, str], dynamic_batch: bool,
           opset: int) -> onnx.ModelProto:
    dynamic_axes = {names[0]: {0: "N"}, names[1]: {0: "N"}} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(part, (example,), buf, dynamo=False, opset_version=opset, input_names=[names[0]],
                          output_names=[names[1]], dynamic_axes=dynamic_axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _run_chain(sessions: list[dict[str, Any]], code: str, x: np.ndarray,
               extra: list[dict[str, dict[str, np.ndarray]]] | None = None) -> np.ndarray:
    """Chain the parts of ``code``; ``extra[k][prefix]``: part k's correction inputs."""
    v = x
    for k, flag in enumerate(code):
        sess = sessions[k][flag]
        feed = {sess.get_inputs()[0].name: v, **(extra[k][code[:k + 1]] if extra is not None else {})}
        v = sess.run(None, feed)[0]
    return v


def _check_names(graph: onnx.ModelProto, digests: dict[str, str], where: str) -> None:
    for name, digest in og.initializer_digests(graph).items():
        if digests.setdefault(name, digest) != digest:
            raise RuntimeError(f"{where}: initializer {name!r} differs from the one of the same name "
                               "in another segment (stable naming broken)")


def _merged(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over an earlier segments record of this manifest. The exporter reuses a
    manifest only for the same checkpoint, input shape, opset and recalibration, so
    what ``new`` does not rewrite (TensorRT engine records, the fp16 forms of an
    earlier ``--fp16`` export) still describes these graphs."""
    if not isinstance(old, dict) or old.get("schema") != SCHEMA or old.get("count") != new["count"] \
            or len(old.get("parts") or []) != new["count"] or _correction_form(old) != _correction_form(new):
        return new  # other graphs (corrected differently): nothing of the old record describes them
    out = {**old, **new}
    out["parts"] = [{**o, **n} for o, n in zip(old["parts"], new["parts"], strict=True)]
    subs = old.get("subnets") or {}
    out["subnets"] = {c: {**subs.get(c, {}), **e} for c, e in new["subnets"].items()}
    return out


def _correction_form(record: dict[str, Any]) -> tuple[Any, ...] | None:
    """What decides the structure of corrected segment graphs (None: uncorrected)."""
    c = record.get("corrections")
    if not isinstance(c, dict):
        return None
    return c.get("reference"), c.get("threshold"), c.get("data"), c.get("samples")


class _Corrections:
    """Everything a corrected segment export computes before tracing (see
    :mod:`adn_edge.export.corrections`): the reference model its graphs fold, each
    part's folded convolutions with their chosen correction, every prefix's vectors,
    and the statistics of every sub-network for the parity reference."""

    def __init__(self, model: ADNModel, count: int, batches: list[Any], reference: str, threshold: float | None,
                 folder: Folder, transposes: og.TransposeIndex) -> None:
        from adn_edge.train.recalibrate import recalibrated, recalibrated_jointly

        codes = subnet.all_codes(count)
        self.reference, self.threshold, self.count = reference, threshold, count
        if reference == "joint":
            self.model = recalibrated_jointly(model, codes, batches)
            self.folder, self.transposes = Folder(self.model, variant="@joint"), og.TransposeIndex(self.model)
        else:
            self.model, self.folder, self.transposes = model, folder, transposes
        self.convs: dict[tuple[int, str], dict[str, corr.FoldedConv]] = {}
        for flag in KINDS:
            for k, part in enumerate(self.model.static_stages(flag * count, self.folder)):
                self.convs[(k, flag)] = corr.folded_convs(part)
        names = sorted({c.bn for d in self.convs.values() for c in d.values()})
        self.ref = corr.bn_stats(self.model, names)
        self.affine = corr.bn_affine(self.model, names)
        self.stats: dict[str, dict[str, corr.Stats]] = {}
        for code in codes:  # one recalibrated copy at a time: only its statistics are kept
            rec = recalibrated(model, code, batches)
            self.stats[code] = corr.bn_stats(rec, self._norms(code))
            del rec
        dev: dict[str, list[float]] = {}
        for code in codes:
            for k in range(count):
                for w, c in self.convs[(k, code[k])].items():
                    s, m = corr.deviations(self.ref[c.bn], self.stats[code][c.bn], self.affine[c.bn][2])
                    d = dev.setdefault(w, [0.0, 0.0])
                    d[0], d[1] = max(d[0], s), max(d[1], m)
        self.deviation = {"scale_max": max((d[0] for d in dev.values()), default=0.0),
                          "shift_max": max((d[1] for d in dev.values()), default=0.0)}
        self.mode: dict[str, str] = {}  # by norm
        for part_convs in self.convs.values():
            for w, c in part_convs.items():
                c.mode = corr.choose_mode(dev[w][0], dev[w][1], threshold)
                self.mode[c.bn] = c.mode
        self.arrays: dict[str, np.ndarray] = {}
        for k in range(count):
            for p in corr.prefixes(k + 1):
                code = p + "1" * (count - k - 1)
                for c in self.convs[(k, p[-1])].values():
                    if c.mode == "none":
                        continue
                    gamma, beta, eps = self.affine[c.bn]
                    a, b = corr.affine(self.ref[c.bn], self.stats[code][c.bn], gamma, beta, eps, c.mode)
                    shape = (1, c.channels, 1, 1)
                    if c.mode == "affine":
                        self.arrays[corr.key(p, c.name + corr.SCALE)] = a.reshape(shape).astype(np.float32)
                    self.arrays[corr.key(p, c.name + corr.SHIFT)] = b.reshape(shape).astype(np.float32)
        self.feeds = corr.feeds(self.arrays, count, {kf: [n for c in d.values() for n in c.inputs]
                                                     for kf, d in self.convs.items()}, "the corrections")

    def _norms(self, code: str) -> list[str]:
        return sorted({c.bn for k in range(self.count) for c in self.convs[(k, code[k])].values()})

    def reference_logits(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each sub-network's PyTorch logits with its recalibrated statistics (as far as
        the chosen corrections carry them: all of them unless a threshold dropped some)."""
        import torch

        m = copy.deepcopy(self.model).eval()
        mods = dict(m.named_modules())
        out = {}
        for code, stats in self.stats.items():
            for name, cur in stats.items():
                mean, var = corr.approximated_stats(self.ref[name], cur, self.mode[name])
                bn = mods[name]
                bn.running_mean.copy_(torch.from_numpy(mean).to(bn.running_mean.dtype))
                bn.running_var.copy_(torch.from_numpy(var).to(bn.running_var.dtype))
            out[code] = reference_logits(m, code, x)
        return out

    def record(self) -> dict[str, Any]:
        counts = {mode: 0 for mode in corr.MODES}
        seen = set()
        for d in self.convs.values():
            for w, c in d.items():
                if w not in seen:
                    seen.add(w)
                    counts[c.mode] += 1
        return {"reference": self.reference, "threshold": self.threshold, "convs": counts,
                "inputs": len(self.arrays), "deviation": {k: round(v, 6) for k, v in self.deviation.items()}}


class SegmentExporter:
    """Exports the 2*S segment graphs of one loaded model into a model directory.

    Works through an :class:`Exporter` of that directory (its folder, costs, options
    and opened manifest): the CLI passes the one that exported the monolithic graphs,
    so both write one manifest instead of each saving a copy over the other's entries.
    """

    def __init__(self, exporter: Exporter, correction_threshold: float | None = None,
                 correction_reference: str = "checkpoint") -> None:
        recal = _recalibration(exporter.options)
        refuse_recalibration(recal, exporter.out_dir)
        check_correction_options(recal is not None, correction_threshold, correction_reference)
        self.exp = exporter
        self.model = exporter.model
        self.count = self.model.num_skippable_stages
        self.threshold = correction_threshold
        self.reference = correction_reference
        self.corrections: _Corrections | None = None

    def _examples(self) -> list[torch.Tensor]:
        """The tensor entering each part (traced with it); the same for either flag
        of earlier stages, which is checked: chaining relies on it."""
        opts = self.exp.options
        size = self.exp.input_size
        batch = opts.batch
        outs = []
        for flag in "10":
            parts = self.model.static_stages(flag * self.count, self.exp.folder)
            x = torch.zeros(batch, 3, size, size)
            seen = []
            with torch.no_grad():
                for part in parts:
                    seen.append(x)
                    x = part.eval()(x)
            outs.append(seen)
        for a, b in zip(*outs, strict=True):
            if a.shape != b.shape:
                raise RuntimeError(f"{self.model.arch}: a stage's output shape depends on its flag "
                                   f"({tuple(a.shape)} vs {tuple(b.shape)}); it cannot be segmented")
        return outs[0]

    def _graph(self, index: int, flag: str, example: torch.Tensor, digests: dict[str, str]) -> onnx.ModelProto:
        code = "1" * self.count
        code = code[:index] + flag + code[index + 1:]
        c = self.corrections
        model, folder, transposes = (c.model, c.folder, c.transposes) if c is not None else \
            (self.model, self.exp.folder, self.exp.transposes)
        part = model.static_stages(code, folder)[index].eval()
        opts = self.exp.options
        names = io_names(index, self.count)
        graph = _trace(part, example, names, opts.dynamic_batch, opts.opset)
        og.rename_initializers(graph, stable_names(part, folder), transposes)
        if c is not None:
            corr.insert_corrections(graph, c.convs[(index, flag)])
        og.set_metadata(graph, {
            "adn.arch": self.model.arch, "adn.segment": index, "adn.segments": self.count,
            "adn.flag": flag, "adn.kind": KINDS[flag], "adn.input": names[0], "adn.output": names[1],
            "adn.source_sha256": self.exp.source.get("sha256", ""), "adn.version": __version__,
            "adn.num_classes": self.model.num_classes, "adn.input_size": self.exp.input_size,
            "adn.precision": "fp32", "adn.corrections": c.reference if c is not None else "",
        })
        if og.op_counts(graph).get("BatchNormalization"):
            raise RuntimeError(f"segment {index} ({KINDS[flag]}): BatchNormalization survived folding")
        onnx.checker.check_model(graph)
        _check_names(graph, digests, f"segment {index}")
        return graph

    def _verify(self, forms: list[dict[str, bytes]], x: np.ndarray, refs: dict[str, np.ndarray], tolerance: float,
                precision: str) -> dict[str, float]:
        """Relative error of every chained sub-network; a ParityError (nothing written) above ``tolerance``."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sessions = [{f: ort.InferenceSession(d, so, providers=["CPUExecutionProvider"]) for f, d in pair.items()}
                    for pair in forms]
        errors = {}
        extra = self.corrections.feeds if self.corrections is not None else None
        for code, ref in refs.items():
            result = compare(_run_chain(sessions, code, x, extra), ref, tolerance)
            if not result.ok:
                what = " (fed its corrections, against the sub-network recalibrated in PyTorch)" if extra else ""
                raise ParityError(
                    f"{self.model.arch} {code} (segmented, {precision}): the chained segment graphs{what} differ "
                    f"from PyTorch by relative error {result.rel_err:.3g} (> {tolerance:g}); nothing was written.")
            errors[code] = result.rel_err
        return errors

    def export(self) -> dict[str, Any]:
        with writing(self.exp.out_dir, "export --segments"):
            self.exp.manifest = self.exp._open_manifest()  # read under the lock (see Exporter.export)
            record = self._export()
            self.exp.retire_replaced()
            return record

    def _export(self) -> dict[str, Any]:
        opts = self.exp.options
        if opts.recalibration is not None:
            self.corrections = _Corrections(self.model, self.count, list(opts.recalibration), self.reference,
                                            self.threshold, self.exp.folder, self.exp.transposes)
        examples = self._examples()
        digests: dict[str, str] = {}
        digests16: dict[str, str] = {}
        forms: dict[str, list[dict[str, bytes]]] = {p: [] for p in FORMS if p == "fp32" or opts.fp16}
        sizes: dict[str, int] = {}
        total = 0
        for k in range(self.count):
            pairs: dict[str, dict[str, bytes]] = {p: {} for p in forms}
            for flag in KINDS:
                g = self._graph(k, flag, examples[k], digests)
                for init in g.graph.initializer:
                    nbytes = numpy_helper.to_array(init).nbytes
                    sizes[init.name] = nbytes
                    total += nbytes
                pairs["fp32"][flag] = g.SerializeToString()
                if "fp16" in pairs:
                    g16 = fp16_twin(g)
                    _check_names(g16, digests16, f"segment {k} (fp16)")
                    pairs["fp16"][flag] = g16.SerializeToString()
            for p, pair in pairs.items():
                forms[p].append(pair)

        x = self.exp.parity_x()
        if self.corrections is not None:
            refs = self.corrections.reference_logits(x)
        else:
            refs = {code: reference_logits(self.model, code, x) for code in subnet.all_codes(self.count)}
        tolerance = {"fp32": opts.tolerance, "fp16": opts.fp16_tolerance}
        errors = {p: self._verify(graphs, x, refs, tolerance[p], p) for p, graphs in forms.items()}

        out_dir = self.exp.out_dir
        arch = self.model.arch
        parts = []
        for k in range(self.count):
            in_name, out_name = io_names(k, self.count)
            in_shape = list(examples[k].shape)
            out_shape = list(examples[k + 1].shape) if k + 1 < self.count else [in_shape[0], self.model.num_classes]
            if opts.dynamic_batch:
                in_shape[0] = out_shape[0] = None
            part: dict[str, Any] = {"index": k, "input": in_name, "output": out_name, "input_shape": in_shape,
                                    "output_shape": out_shape}
            for p, graphs in forms.items():
                variant, suffix = FORMS[p]
                files = {}
                for flag, data in graphs[k].items():
                    name = segment_file(arch, k, KINDS[flag], variant)
                    write_bytes(out_dir / name, data)
                    files[KINDS[flag]] = manifest.file_record(out_dir, name)
                part["files" + suffix] = files
            parts.append(part)
        per_code: dict[str, Any] = {}
        for code in refs:
            cost = self.exp.costs[code]
            per_code[code] = {"gmacs": round(cost.gmacs, 6), "params": cost.params,
                              **{"rel_err" + FORMS[p][1]: e[code] for p, e in errors.items()}}
        record: dict[str, Any] = {"schema": SCHEMA, "count": self.count, "opset": opts.opset, "parts": parts}
        for p, e in errors.items():
            record["parity" + FORMS[p][1]] = {"rel_err_max": max(e.values()), "tolerance": tolerance[p],
                                              "samples": int(x.shape[0]), "runtime": "onnxruntime-cpu"}
        record.update(subnets=per_code, weights={"bytes_unique": sum(sizes.values()), "bytes_total": total})
        if self.corrections is not None:
            name = corrections_file(arch)
            write_bytes(out_dir / name, corr.to_npz(self.corrections.arrays))
            recal = _recalibration(opts) or {}
            record["corrections"] = {"file": manifest.file_record(out_dir, name), **recal,
                                     **self.corrections.record()}
            for p in forms:
                record["parity" + FORMS[p][1]]["reference"] = "pytorch, recalibrated per sub-network"
        record = _merged(self.exp.manifest.get("segments"), record)
        self.exp.manifest["segments"] = record
        manifest.save(out_dir, self.exp.manifest)
        return record


def _recalibration(options: ExportOptions) -> dict[str, Any] | None:
    """This export's recalibration as the manifest records it (data and samples), or None."""
    batches = options.recalibration
    if batches is None:
        return None
    return {"data": options.recalibration_source, "samples": int(sum(len(b) for b in batches))}


def check_correction_options(recalibrated: bool, threshold: float | None, reference: str) -> None:
    """Refuse correction options that cannot apply (before anything is computed)."""
    if reference not in corr.REFERENCES:
        raise AdnError(f"The correction reference must be one of {', '.join(corr.REFERENCES)}, not {reference!r}.")
    if threshold is not None and (not math.isfinite(threshold) or threshold < 0):
        raise AdnError(f"The correction threshold must be a finite number of at least 0, not {threshold!r}.")
    if not recalibrated and (threshold is not None or reference != "checkpoint"):
        raise AdnError("Correction options apply to recalibrated segments only: without --recalibrate the "
                       "segment graphs fold the checkpoint's statistics and take no corrections.",
                       "Add --recalibrate DATA (with --segments), or leave out --correction-threshold and "
                       "--correction-reference.")


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The segments record as ``adn-edge export --json`` prints it: file names, not hashes."""
    parts = []
    for part in record["parts"]:
        entry = {k: part[k] for k in ("index", "input", "output")}
        for key in manifest.SEGMENT_FILE_KEYS.values():
            if key in part:
                entry[key] = {kind: rec["path"] for kind, rec in part[key].items()}
        parts.append(entry)
    out = {"count": record["count"], "parts": parts, "parity": record["parity"],
           "parity_fp16": record.get("parity_fp16"), "weights": record["weights"]}
    if record.get("corrections"):
        out["corrections"] = {k: v for k, v in record["corrections"].items() if k != "file"} | \
            {"file": record["corrections"]["file"]["path"]}
    return out


def export_segments(model: ADNModel, out_dir: str | Path, source: dict[str, Any] | None = None,
                    options: ExportOptions | None = None, correction_threshold: float | None = None,
                    correction_reference: str = "checkpoint") -> dict[str, Any]:
    """Export the 2*S segment graphs of ``model`` into ``out_dir`` (see the module docstring).

    Returns the manifest's ``segments`` record. Use the same ``source`` as for the
    monolithic export so both land in one manifest. With ``options.recalibration`` the
    segments are corrected (per-sub-network statistics as graph inputs,
    :mod:`adn_edge.export.corrections`; ``correction_threshold`` for the cheap form,
    ``correction_reference`` "checkpoint" or "joint" for the folded statistics).
    Refused (AdnError) where the directory holds graphs of another recalibration
    (:func:`refuse_recalibration`).
    """
    options = options or ExportOptions()
    recal = _recalibration(options)
    refuse_recalibration(recal, out_dir)  # before the exporter creates the directory
    check_correction_options(recal is not None, correction_threshold, correction_reference)
    exporter = Exporter(model, out_dir, source or {"path": None, "sha256": "", "weights": "in-memory"}, options)
    return SegmentExporter(exporter, correction_threshold, correction_reference).export()
