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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adn_edge.backends.tensorrt.engines import gpu_mismatch
from adn_edge.backends.tensorrt.env import Environment
from adn_edge.backends.tensorrt.options import PRECISIONS, BuildOptions
from adn_edge.backends.tensorrt.units import Unit
from adn_edge.errors import AdnError
from adn_edge.fileio import sha256_file
from adn_edge.modeldir.names import calibration_cache_name, engine_name, timing_cache_name


# --------------------------------------------------------------------------- cache names


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())) or "gpu"


def cache_tag(env: Environment, gpu: bool = True) -> str:
    """What a cache is valid for: ``trt10.3.0`` and, for timing caches, the GPU
    (``-orin-nvgpu-cc87-8sm``). TensorRT ignores (or refuses) a timing cache from another
    version and times every tactic for one GPU; a calibration cache is bound to the
    version's format, while its scales (properties of the activations) are not to a GPU."""
    tag = f"trt{env.tensorrt_version}"
    if gpu:
        tag += f"-{_slug(env.gpu)}-cc{env.compute_capability.replace('.', '')}"
        if env.sm_count:
            tag += f"-{env.sm_count}sm"
    return tag


def timing_cache_file(arch: str, env: Environment) -> str:
    """``<arch>.trt10.3.0-orin-nvgpu-cc87-8sm.timing.cache``: the default timing cache,
    one per TensorRT version and GPU, so a directory built on two devices (or before and
    after a JetPack upgrade) keeps a valid cache for each. Built from the model
    directory's own name (:func:`adn_edge.modeldir.names.timing_cache_name`)."""
    return timing_cache_name(f"{arch}.{cache_tag(env)}")


def calibration_cache_file(arch: str, key: str, env: Environment) -> str:
    """``<arch>_<key>.trt10.3.0.int8.calib``: one INT8 calibration cache per graph and
    TensorRT version (:func:`adn_edge.modeldir.names.calibration_cache_name`)."""
    return calibration_cache_name(arch, f"{key}.{cache_tag(env, gpu=False)}")



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
    if segment and precision in ("int8", "best") and (trt_major >= 11 or not calibrate) \
            and "onnx_int8" not in files:
        # INT8 segments come from the Q/DQ segment graphs of `quantize --segments`, or TensorRT 10's calibrator.
        raise AdnError(
            f"An {precision} engine of {what} needs INT8 scales "
            + (f"from the Q/DQ segment graphs of `adn-edge quantize --segments`: TensorRT {trt_major}.x has no "
               "calibrator (it reads scales from Q/DQ graphs only)." if trt_major >= 11
               else "from calibration images or from the Q/DQ segment graphs of `adn-edge quantize --segments`."),
            "Run `adn-edge quantize DIR --segments --calib IMAGES` (each part calibrated on the activations of "
            "every combination of the forms before it)"
            + (", pass --calib IMAGES_DIR (each segment is calibrated on the images carried through the segments "
               "before it), or build segments with --precision fp16." if trt_major < 11
               else ", or build segments with --precision fp16 on TensorRT 11."))
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
    gpu = gpu_mismatch(existing, env)
    if gpu is not None:
        return f"built for {gpu}"
    old_opts = existing.get("options") or {}
    new_opts = options.record()
    if dict(old_opts) != new_opts:
        return f"options changed ({_diff_options(old_opts, new_opts)})"
    if source.calibrate and calibration_digest is not None:
        cal = existing.get("calibration") or {}
        if cal.get("images_sha256") != calibration_digest:
            return "calibration images changed"
    return None


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
            and (directory / calibration_cache_file(arch, unit.key, env)).exists()
            and "onnx" in files
            and "onnx_int8" not in files
        )
        source = select_source(files, options.precision, env.trt_major, can_calibrate, unit.key, unit)
        name = engine_name(arch, unit.key, options.precision)
        existing = unit.engines.get(options.precision)
        reason = "forced (--force)" if force else staleness(
            existing, directory / name, source, files[source.key], options, env, digest if calibrate else None)
        jobs.append(Job(
            code=unit.key, precision=options.precision, engine=name, source=source,
            source_record=files[source.key], action="build" if reason else "skip",
            reason=reason or "up to date",
            calibration_cache=calibration_cache_file(arch, unit.key, env) if source.calibrate else None,
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
    """The manifest entry for a freshly written engine (docs/model-directory.md)."""
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
