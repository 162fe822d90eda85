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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from adn_edge.build.options import PRECISIONS, BuildOptions
from adn_edge.errors import EXIT_FAILURE, AdnError, AdnFailure
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


def select_source(files: Mapping[str, Any], precision: str, trt_major: int, calibrate: bool, code: str) -> Source:
    """Pick the graph and the precision mechanism for one engine.

    TensorRT 10 builds every precision from the float32 graph with builder flags
    (JetPack 6's 10.3 works this way); INT8 uses the calibrator when calibration data
    is at hand, else a Q/DQ graph. TensorRT 11 removed the flags: the graph's own
    types decide, so FP16 needs the float16 export and INT8 a Q/DQ export.
    """
    if precision not in PRECISIONS:
        raise AdnError(f"Unknown precision {precision!r}.")
    have = set(files)
    if trt_major >= 11:
        wanted = {"fp32": ["onnx"], "fp16": ["onnx_fp16"], "int8": ["onnx_int8"],
                  "best": ["onnx_int8", "onnx_fp16"]}[precision]
        for key in wanted:
            if key in have:
                return Source(key, True, False, False, False)
        fix = {"onnx": "`adn-edge export`", "onnx_fp16": "`adn-edge export --fp16`",
               "onnx_int8": "`adn-edge quantize` (a Q/DQ graph)"}
        raise AdnError(
            f"Sub-network {code} has no {' or '.join(repr(k) for k in wanted)} graph, which a {precision} engine "
            f"needs on TensorRT {trt_major}.x (strongly typed networks: the graph's types decide precision; "
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
            f"An {precision} engine of sub-network {code} needs INT8 scales: calibration images or a Q/DQ graph.",
            "Pass --calib IMAGES_DIR (a folder of a few hundred training images; the calibration cache beside "
            "the engines is reused on later builds), or export a Q/DQ graph ('onnx_int8').",
        )
    if "onnx" not in have:
        raise AdnError(f"Sub-network {code} has no float32 ONNX graph in the manifest.",
                       f"Export it with `adn-edge export ... --subnet {code}`.")
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


def plan_builds(
    directory: Path,
    manifest: Mapping[str, Any],
    codes: Sequence[str],
    options: BuildOptions,
    env: Environment,
    calibrate: bool,
    calibration_digest: str | None = None,
    force: bool = False,
) -> list[Job]:
    """One job per code: build (with the reason) or skip (up to date)."""
    arch = str(manifest["arch"])
    jobs: list[Job] = []
    for code in codes:
        entry = manifest["subnets"].get(code)
        if entry is None:
            have = ", ".join(sorted(manifest["subnets"], reverse=True)) or "none"
            raise AdnError(f"Sub-network {code} is not in this model directory (it holds: {have}).",
                           f"Export it first with `adn-edge export ... --subnet {code}`.")
        files = entry.get("files") or {}
        # A leftover calibration cache stands in for --calib only when there is no Q/DQ
        # graph: `adn-edge quantize`'s graph is the INT8 source unless --calib asks otherwise.
        can_calibrate = calibrate or (
            options.precision in ("int8", "best")
            and (directory / calibration_cache_filename(arch, code)).exists()
            and "onnx" in files
            and "onnx_int8" not in files
        )
        source = select_source(files, options.precision, env.trt_major, can_calibrate, code)
        name = engine_filename(arch, code, options.precision)
        existing = (entry.get("engines") or {}).get(options.precision)
        reason = "forced (--force)" if force else staleness(
            existing, directory / name, source, files[source.key], options, env,
            calibration_digest if calibrate else None)
        jobs.append(Job(
            code=code, precision=options.precision, engine=name, source=source,
            source_record=files[source.key], action="build" if reason else "skip",
            reason=reason or "up to date",
            calibration_cache=calibration_cache_filename(arch, code) if source.calibrate else None,
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
    def has(code: str, p: str) -> bool:
        return p in ((manifest["subnets"].get(code) or {}).get("engines") or {})

    if precision is not None:
        p = str(precision).lower()
        if p not in PRECISIONS:
            raise AdnError(f"{precision!r} is not an engine precision ({', '.join(PRECISIONS)}).")
        missing = [c for c in codes if not has(c, p)]
        if missing:
            raise AdnError(
                f"No {p} TensorRT engine for sub-network(s) {', '.join(missing)} in this model directory.",
                f"Build them with `adn-edge build DIR --precision {p} --subnet {missing[0]}` (or --subnet all).",
            )
        return p
    for p in PRECISION_PREFERENCE:
        if all(has(c, p) for c in codes):
            return p
    raise AdnError(
        f"No TensorRT engine precision is built for all of {', '.join(codes)}.",
        "Build engines with `adn-edge build DIR --precision fp16`.",
    )


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
