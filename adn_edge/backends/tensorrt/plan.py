"""Which engines to (re)build, from which graph, and which engines may be loaded here.

An engine is a function of (graph bytes, build options, TensorRT version, GPU). The
manifest records all four with every engine; this module compares them with the
present ones so that ``adn-edge build`` rebuilds exactly the stale engines (all 2^S
builds of a model can take an hour on a Jetson) and the runtime refuses an engine
that TensorRT would reject or, worse, run slowly with tactics tuned for another GPU.
All plain Python; the TensorRT-facing code only executes the jobs.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from adn_edge.backends.tensorrt.options import PRECISIONS, BuildOptions
from adn_edge.errors import EXIT_FAILURE, AdnError, AdnFailure
from adn_edge.modeldir.manifest import SEGMENT_KINDS, segments_record
from adn_edge.fileio import sha256_file


class BuildFailure(AdnFailure):
    """TensorRT could not build, or built something we refuse to publish (exit 1).

    Not an :class:`AdnError`: the user's input was valid; the toolchain or the GPU
    disagreed. The message still says what happened in one paragraph.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        self.message = message.strip()
        super().__init__(self.message)

    def paragraph(self) -> str:
        return self.message


@dataclass(frozen=True)
class Environment:
    """The TensorRT version and GPU that engines are built for (or loaded on)."""

    tensorrt_version: str
    gpu: str
    compute_capability: str

    @property
    def trt_major(self) -> int:
        return tensorrt_major(self.tensorrt_version)

    def as_record(self) -> dict[str, str]:
        return {"tensorrt_version": self.tensorrt_version, "gpu": self.gpu,
                "compute_capability": self.compute_capability}


def tensorrt_major(version: str) -> int:
    head = str(version).split(".", 1)[0]
    try:
        return int(head)
    except ValueError:
        raise AdnError(f"Cannot read the TensorRT version {version!r}.") from None


def engine_filename(arch: str, code: str, precision: str) -> str:
    """CONTRACTS.md section 3: ``<arch>_<code>.<precision>.engine``."""
    return f"{arch}_{code}.{precision}.engine"


def timing_cache_filename(arch: str) -> str:
    return f"{arch}.timing.cache"


def calibration_cache_filename(arch: str, code: str) -> str:
    """One per sub-network: INT8 scales belong to one graph's tensors, and the
    sub-networks differ in which tensors exist."""
    return f"{arch}_{code}.int8.calib"


# --------------------------------------------------------------------------- source


@dataclass(frozen=True)
class Source:
    """The graph an engine is built from and how precision is obtained."""

    key: str
    """``files`` key in the manifest: ``onnx``, ``onnx_fp16`` or ``onnx_int8``."""
    strongly_typed: bool
    """TensorRT 11 (or an explicit choice): precision comes from the graph's types."""
    fp16_flag: bool
    int8_flag: bool
    calibrate: bool
    """Implicit INT8 quantisation with an entropy calibrator (TensorRT 10 only)."""

    def describe(self) -> str:
        if self.strongly_typed:
            return f"{self.key} (strongly typed)"
        flags = [f for f, on in (("FP16", self.fp16_flag), ("INT8", self.int8_flag)) if on]
        how = "+".join(flags) if flags else "FP32"
        if self.calibrate:
            how += ", calibrated"
        return f"{self.key} ({how})"


PRECISION_SUPPORT = {
    10: "TensorRT 10.x: fp32, fp16 (builder flag), int8 (entropy calibration from --calib, or the Q/DQ "
        "graph 'onnx_int8' when there is one and no --calib), best (FP16+INT8 flags).",
    11: "TensorRT 11.x: strongly typed networks only: fp32 from 'onnx', fp16 from the float16 graph that "
        "`adn-edge export --fp16` writes ('onnx_fp16'), int8 and best from a Q/DQ graph ('onnx_int8').",
}


def select_source(files: Mapping[str, Any], precision: str, trt_major: int, calibrate: bool, code: str,
                  unit: Unit | None = None) -> Source:
    """Pick the graph and the precision mechanism for one engine.

    TensorRT 10 builds every precision from the float32 graph with builder flags
    (JetPack 6's 10.3 works this way); INT8 uses the calibrator when calibration data
    is at hand, else a Q/DQ graph. TensorRT 11 removed the flags: the graph's own
    types decide, so FP16 needs the float16 export and INT8 a Q/DQ export.
    """
    if precision not in PRECISIONS:
        raise AdnError(f"Unknown precision {precision!r}.")
    segment = unit is not None and unit.segment is not None
    what = unit.what if unit is not None else f"sub-network {code}"
    What = what[:1].upper() + what[1:]  # noqa: N806 - the sentence-initial form
    export_cmd = "`adn-edge export ... --segments`" if segment else f"`adn-edge export ... --subnet {code}`"
    if segment and precision in ("int8", "best") and (trt_major >= 11 or not calibrate):
        # No Q/DQ segment graphs exist; INT8 segments come from TensorRT 10's calibrator.
        raise AdnError(
            f"An {precision} engine of {what} needs INT8 scales from calibration images"
            + (f", and TensorRT {trt_major}.x has no calibrator (it reads scales from Q/DQ graphs only, which "
               "adn-edge does not make for segments)." if trt_major >= 11 else "."),
            "Pass --calib IMAGES_DIR (each segment is calibrated on the images carried through the segments "
            "before it), or build segments with --precision fp16." if trt_major < 11
            else "Build segments with --precision fp16 on TensorRT 11, or monolithic INT8 engines from "
                 "`adn-edge quantize` graphs.")
    have = set(files)
    if trt_major >= 11:
        wanted = {"fp32": ["onnx"], "fp16": ["onnx_fp16"], "int8": ["onnx_int8"],
                  "best": ["onnx_int8", "onnx_fp16"]}[precision]
        for key in wanted:
            if key in have:
                return Source(key, True, False, False, False)
        fix = {"onnx": "`adn-edge export`",
               "onnx_fp16": "`adn-edge export --segments --fp16`" if segment else "`adn-edge export --fp16`",
               "onnx_int8": "`adn-edge quantize` (a Q/DQ graph)"}
        raise AdnError(
            f"{What} has no {' or '.join(repr(k) for k in wanted)} graph, which a {precision} engine needs "
            f"on TensorRT {trt_major}.x (strongly typed networks: the graph's types decide precision; "
            "there are no FP16/INT8 builder flags any more).",
            f"Create it with {fix[wanted[0]]}, or build on TensorRT 10.x. {PRECISION_SUPPORT[11]}",
        )
    if trt_major < 10:
        raise AdnError(f"TensorRT {trt_major}.x is too old: adn-edge needs TensorRT 10 or newer.",
                       "On a Jetson, flash JetPack 6.1 or newer (TensorRT 10.3); on x86, pip install tensorrt-cu12.")
    if precision in ("int8", "best") and not calibrate:
        if "onnx_int8" in have:
            return Source("onnx_int8", False, precision == "best", True, False)
        raise AdnError(
            f"An {precision} engine of {what} needs INT8 scales: calibration images or a Q/DQ graph.",
            "Pass --calib IMAGES_DIR (a folder of a few hundred training images; the calibration cache beside "
            "the engines is reused on later builds), or export a Q/DQ graph ('onnx_int8').",
        )
    if "onnx" not in have:
        raise AdnError(f"{What} has no float32 ONNX graph in the manifest.",
                       f"Export it with {export_cmd}.")
    return Source("onnx", False, precision in ("fp16", "best"), precision in ("int8", "best"),
                  precision in ("int8", "best"))


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Job:
    code: str
    precision: str
    engine: str
    """Engine file name, relative to the model directory."""
    source: Source
    source_record: Mapping[str, Any]
    action: str
    """``build`` or ``skip``."""
    reason: str
    calibration_cache: str | None = None
    unit: Unit | None = None
    """What the engine is of, and where its record goes (set by :func:`plan_unit_builds`)."""


def _diff_options(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    parts = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(parts)


def staleness(
    existing: Mapping[str, Any] | None,
    engine_path: Path,
    source: Source,
    source_record: Mapping[str, Any],
    options: BuildOptions,
    env: Environment,
    calibration_digest: str | None = None,
) -> str | None:
    """Why the engine must be rebuilt, or None when it is up to date.

    ``calibration_digest`` is the digest of the calibration images given now (None
    when no --calib was given: then the recorded calibration, via its cache, stands).
    """
    if existing is None:
        return "not built yet"
    if not engine_path.exists():
        return "engine file missing"
    if existing.get("sha256") and sha256_file(engine_path) != existing["sha256"]:
        return "engine file changed since it was built"
    src = existing.get("source") or {}
    if src.get("key") != source.key:
        return f"graph {src.get('key')!r} -> {source.key!r}"
    if src.get("sha256") != source_record.get("sha256"):
        return "ONNX graph changed"
    if existing.get("tensorrt_version") != env.tensorrt_version:
        return f"TensorRT {existing.get('tensorrt_version')} -> {env.tensorrt_version}"
    if existing.get("gpu") != env.gpu or str(existing.get("compute_capability")) != env.compute_capability:
        return (f"GPU {existing.get('gpu')} (sm {existing.get('compute_capability')}) -> "
                f"{env.gpu} (sm {env.compute_capability})")
    old_opts = existing.get("options") or {}
    new_opts = options.record()
    if dict(old_opts) != new_opts:
        return f"options changed ({_diff_options(old_opts, new_opts)})"
    if source.calibrate and calibration_digest is not None:
        cal = existing.get("calibration") or {}
        if cal.get("images_sha256") != calibration_digest:
            return "calibration images changed"
    return None


@dataclass(frozen=True)
class Unit:
    """One graph that becomes one engine: a whole sub-network, or one form of one segment.

    ``adn-edge build`` treats both the same way (pick the graph, compare with the
    recorded engine, build, record); only where their records live in the manifest
    and the shape of their input differ, and a Unit carries exactly that.
    """

    key: str
    """``1010`` for a sub-network, ``seg2_skip`` for part 2's skip form: the engine is
    ``<arch>_<key>.<precision>.engine``."""
    what: str
    """How messages name it: ``sub-network 1010``, ``segment 2 (skip)``."""
    files: Mapping[str, Any]
    """The unit's graphs by manifest key (``onnx``, ``onnx_fp16``, ``onnx_int8``)."""
    engines: dict[str, Any]
    """The manifest's live dict of this unit's engine records, by precision."""
    input_spec: Mapping[str, Any]
    """``{"name", "shape"}`` of the graph's one input, for the optimisation profile."""
    segment: int | None = None


def subnet_units(manifest: dict[str, Any], codes: Sequence[str]) -> list[Unit]:
    """The units of whole sub-networks, in the order given."""
    units = []
    for code in codes:
        entry = manifest["subnets"].get(code)
        if entry is None:
            have = ", ".join(sorted(manifest["subnets"], reverse=True)) or "none"
            raise AdnError(f"Sub-network {code} is not in this model directory (it holds: {have}).",
                           f"Export it first with `adn-edge export ... --subnet {code}`.")
        units.append(Unit(code, f"sub-network {code}", entry.get("files") or {}, entry.setdefault("engines", {}),
                          manifest["input"]))
    return units


def segment_key(index: int, kind: str) -> str:
    return f"seg{index}_{kind}"


def segment_what(key: str) -> str:
    """How messages name a segment form: ``seg2_skip`` -> ``segment 2 (skip)``."""
    index, kind = key.removeprefix("seg").split("_", 1)
    return f"segment {index} ({kind})"


def segment_units(manifest: dict[str, Any]) -> list[Unit]:
    """The 2*S units of the segmented export (``adn-edge export --segments``): part k in
    its full and skip forms. Their engines chain into every sub-network at run time.

    Engine records live beside the graphs: ``segments.parts[k].engines[kind][precision]``.
    """
    seg = segments_record(manifest, " to build", " (or build the monolithic sub-networks: leave --segments out)")
    units = []
    for part in seg["parts"]:
        k = int(part["index"])
        engines = part.setdefault("engines", {})
        for kind in SEGMENT_KINDS.values():
            files = {"onnx": part["files"][kind]}
            fp16 = (part.get("files_fp16") or {}).get(kind)
            if fp16 is not None:
                files["onnx_fp16"] = fp16
            key = segment_key(k, kind)
            units.append(Unit(key, segment_what(key), files, engines.setdefault(kind, {}),
                              {"name": part["input"], "shape": part["input_shape"]}, segment=k))
    return units


def plan_builds(
    directory: Path,
    manifest: dict[str, Any],
    codes: Sequence[str],
    options: BuildOptions,
    env: Environment,
    calibrate: bool,
    calibration_digest: str | None = None,
    force: bool = False,
) -> list[Job]:
    """One job per sub-network code: build (with the reason) or skip (up to date)."""
    return plan_unit_builds(directory, str(manifest["arch"]), subnet_units(manifest, codes), options, env,
                            calibrate, calibration_digest, force)


def plan_unit_builds(
    directory: Path,
    arch: str,
    units: Sequence[Unit],
    options: BuildOptions,
    env: Environment,
    calibrate: bool,
    calibration_digest: str | Mapping[str, str] | None = None,
    force: bool = False,
) -> list[Job]:
    """One job per unit (sub-network or segment form): build, with the reason, or skip.

    ``calibration_digest``: one digest for every unit, or one per unit key (segments
    calibrate on different data each)."""
    jobs: list[Job] = []
    for unit in units:
        digest = calibration_digest.get(unit.key) if isinstance(calibration_digest, Mapping) \
            else calibration_digest
        files = unit.files
        # A leftover calibration cache stands in for --calib only when there is no Q/DQ
        # graph: `adn-edge quantize`'s graph is the INT8 source unless --calib asks otherwise.
        can_calibrate = calibrate or (
            options.precision in ("int8", "best")
            and (directory / calibration_cache_filename(arch, unit.key)).exists()
            and "onnx" in files
            and "onnx_int8" not in files
        )
        source = select_source(files, options.precision, env.trt_major, can_calibrate, unit.key, unit)
        name = engine_filename(arch, unit.key, options.precision)
        existing = unit.engines.get(options.precision)
        reason = "forced (--force)" if force else staleness(
            existing, directory / name, source, files[source.key], options, env, digest if calibrate else None)
        jobs.append(Job(
            code=unit.key, precision=options.precision, engine=name, source=source,
            source_record=files[source.key], action="build" if reason else "skip",
            reason=reason or "up to date",
            calibration_cache=calibration_cache_filename(arch, unit.key) if source.calibrate else None,
            unit=unit,
        ))
    return jobs


def reuse_calibration_cache(
    existing: Mapping[str, Any] | None, cache_path: Path, calibration_digest: str | None,
) -> bool:
    """May the calibrator hand TensorRT the cache file instead of running calibration?

    Yes when the file exists and either no images were given now (the cache *is* the
    calibration) or they are the images that produced it.
    """
    if not cache_path.exists():
        return False
    if calibration_digest is None:
        return True
    cal = (existing or {}).get("calibration") or {}
    return bool(cal.get("images_sha256") == calibration_digest and cal.get("cache_sha256")
                and cal["cache_sha256"] == sha256_file(cache_path))


def engine_record(
    directory: Path,
    job: Job,
    env: Environment,
    options: BuildOptions,
    observed: Mapping[str, Any],
    build_seconds: float,
    timing_cache: str | None,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest entry for a freshly written engine (CONTRACTS.md section 3)."""
    path = directory / job.engine
    rec: dict[str, Any] = {
        "path": job.engine,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "precision": job.precision,
        "precision_observed": dict(observed),
        **env.as_record(),
        "build_seconds": round(build_seconds, 3),
        "built_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "options": options.record(),
        "source": {"key": job.source.key, "path": job.source_record.get("path"),
                   "sha256": job.source_record.get("sha256"), "strongly_typed": job.source.strongly_typed},
        "timing_cache": timing_cache,
    }
    if calibration is not None:
        rec["calibration"] = dict(calibration)
    return rec


# --------------------------------------------------------------------------- runtime side


def check_engine_compatible(record: Mapping[str, Any], env: Environment, code: str) -> None:
    """Refuse an engine built for another TensorRT or GPU, before TensorRT sees it.

    TensorRT itself rejects a plan from another version with a cryptic
    deserialisation error, and may *accept* one from another GPU of similar compute
    capability and run it with tactics tuned for a different chip.
    """
    name = record.get("path", f"the {code} engine")
    built_trt = record.get("tensorrt_version")
    if built_trt != env.tensorrt_version:
        raise AdnError(
            f"{name} was built with TensorRT {built_trt}, but this machine has TensorRT {env.tensorrt_version}; "
            "TensorRT engines only load on the version that built them.",
            "Rebuild on this device: `adn-edge build DIR` (engines are not portable; copy the ONNX directory "
            "and build where you run).",
        )
    built_gpu, built_cc = record.get("gpu"), str(record.get("compute_capability"))
    if built_cc != env.compute_capability or built_gpu != env.gpu:
        raise AdnError(
            f"{name} was built for {built_gpu} (compute capability {built_cc}), but this machine has "
            f"{env.gpu} (compute capability {env.compute_capability}); engines are specific to the GPU they "
            "were built on.",
            "Rebuild on this device: `adn-edge build DIR`.",
        )


PRECISION_PREFERENCE = ("fp16", "best", "int8", "fp32")
"""What ``precision=None`` opens: the usual Jetson choice first."""


def choose_precision(manifest: Mapping[str, Any], codes: Sequence[str], precision: str | None) -> str:
    """The engine precision to open for ``codes`` (all codes must have it)."""
    tables = {code: (manifest["subnets"].get(code) or {}).get("engines") or {} for code in codes}
    return pick_precision(tables, precision, "sub-network(s)",
                          lambda p, first: f"`adn-edge build DIR --precision {p} --subnet {first}` (or --subnet all)")


def pick_precision(tables: Mapping[str, Mapping[str, Any]], precision: str | None, noun: str,
                   build_cmd: Callable[[str, str], str]) -> str:
    """``precision`` if every table (engine records by precision, one per unit) has it,
    else an error naming the units that lack it; None picks by :data:`PRECISION_PREFERENCE`."""
    names = list(tables)
    if precision is not None:
        p = str(precision).lower()
        if p not in PRECISIONS:
            raise AdnError(f"{precision!r} is not an engine precision ({', '.join(PRECISIONS)}).")
        missing = [n for n in names if p not in tables[n]]
        if missing:
            raise AdnError(f"No {p} TensorRT engine for {noun + ' ' if noun else ''}{', '.join(missing)} in this "
                           "model directory.", f"Build them with {build_cmd(p, missing[0])}.")
        return p
    for p in PRECISION_PREFERENCE:
        if all(p in tables[n] for n in names):
            return p
    raise AdnError(f"No TensorRT engine precision is built for all of {', '.join(names)}.",
                   f"Build engines with {build_cmd('fp16', names[0] if names else 'all')}.")


def engine_for(manifest: Mapping[str, Any], code: str, precision: str) -> Mapping[str, Any]:
    entry = manifest["subnets"].get(code)
    if entry is None:
        raise AdnError(f"Sub-network {code} is not in this model directory.")
    rec = (entry.get("engines") or {}).get(precision)
    if rec is None:
        raise AdnError(f"Sub-network {code} has no {precision} engine.",
                       f"Build it with `adn-edge build DIR --precision {precision} --subnet {code}`.")
    return cast("Mapping[str, Any]", rec)


@dataclass(frozen=True)
class BuiltEngine:
    """What the TensorRT-facing code hands back for one job."""

    plan: bytes
    inspector_json: str
    seconds: float
    calibration_batches: int | None = None
    """Batches the calibrator fed (0 when TensorRT used the calibration cache)."""
    log: tuple[str, ...] = ()
    """TensorRT's warnings during the build, for the report."""
