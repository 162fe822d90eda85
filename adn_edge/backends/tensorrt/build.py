"""TensorRT engines for the sub-networks of a model directory (``adn-edge build``).

The pipeline step after export: every ``<arch>_<code>.onnx`` listed in the manifest
becomes ``<arch>_<code>.<precision>.engine`` beside it, built on the device that will
run it (engines are specific to the GPU and the TensorRT version). One call builds
all requested sub-networks with one shared timing cache, skips engines that are up
to date, verifies that each engine really has the precision asked for, and records
everything in ``manifest.json``.

Layout: :mod:`~adn_edge.backends.tensorrt.options` (validation, profile shapes),
:mod:`~adn_edge.backends.tensorrt.plan` (what to rebuild, what may be loaded),
:mod:`~adn_edge.backends.tensorrt.calibration` (INT8 data), :mod:`~adn_edge.backends.tensorrt.precision`
(what the engine inspector says) are plain Python; :mod:`~adn_edge.backends.tensorrt.builder`
is the only module that calls TensorRT, :mod:`~adn_edge.backends.tensorrt.env` imports it
lazily. Importing this package does not import TensorRT.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adn_edge.modeldir import manifest as manifest_mod
from adn_edge.backends.tensorrt.calibration import CalibrationData, CalibrationPlan, CalibrationSet
from adn_edge.modeldir.lock import locked
from adn_edge.modeldir.preprocess import Preprocess
from adn_edge.backends.tensorrt.options import (
    DEFAULT_WORKSPACE_MB, PRECISIONS, BuildOptions, ProfileShapes, make_options, profile_shapes, static_batch,
)
from adn_edge.backends.tensorrt.plan import (
    BuiltEngine, Job, engine_record, plan_unit_builds, reuse_calibration_cache, timing_cache_file,
)
from adn_edge.errors import BuildFailure
from adn_edge.backends.tensorrt.env import Environment
from adn_edge.backends.tensorrt.units import Unit, segment_units, subnet_units
from adn_edge.backends.tensorrt.precision import PrecisionMismatch, summarize, verify
from adn_edge.backends.tensorrt.precision import label as precision_label
from adn_edge.errors import AdnError
from adn_edge.fileio import sha256_file, write_bytes

__all__ = [
    "PRECISIONS", "BuildEvent", "BuildFailure", "BuildOptions", "PrecisionMismatch", "Toolchain",
    "build_directory",
]

log = logging.getLogger("adn_edge.backends.tensorrt.build")


@dataclass(frozen=True)
class BuildEvent:
    """Progress report: ``kind`` is ``start`` (a build begins), ``built``, ``skipped``,
    ``warning`` or ``info``; ``index``/``total`` count the requested sub-networks
    (0 for events about the whole run)."""

    kind: str
    index: int
    total: int
    code: str | None
    message: str


class Toolchain(Protocol):
    """What :func:`build_directory` needs from TensorRT (implemented by
    :class:`adn_edge.backends.tensorrt.builder.TrtToolchain`; tests pass a fake)."""

    env: Environment

    def load_timing_cache(self, path: Path) -> str: ...
    def save_timing_cache(self, path: Path) -> None: ...
    def build(self, job: Job, onnx_path: Path, onnx_bytes: bytes, options: BuildOptions,
              profile: ProfileShapes, calibration: CalibrationPlan | None = None) -> BuiltEngine: ...
    def close(self) -> None: ...


def _real_toolchain(cuda: str, device: int, verbose: bool) -> Toolchain:
    from adn_edge.backends.tensorrt import env as trt_env

    trt_env.import_tensorrt()  # AdnError with install instructions when absent
    env = trt_env.environment(device, cuda)
    from adn_edge.backends.tensorrt.builder import TrtToolchain

    return TrtToolchain(env, cuda=cuda, device=device, verbose=verbose)


def _relative(directory: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(directory.resolve()))
    except ValueError:
        return str(path)


@locked("build")
def build_directory(
    directory: str | os.PathLike[str],
    subnets: str | Iterable[str] | None = None,
    precision: str = "fp16",
    calib: str | os.PathLike[str] | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    opt_level: int = 3,
    force: bool = False,
    progress: Callable[[BuildEvent], None] | None = None,
    *,
    cuda: str = "auto",
    device: int = 0,
    verbose: bool = False,
    toolchain: Toolchain | None = None,
    segments: bool = False,
) -> list[dict[str, Any]]:
    """Build (or skip, when up to date) one engine per requested sub-network.

    ``segments=True`` builds the 2*S segment engines instead (``adn-edge export
    --segments`` graphs: each stage in its full and skip forms), from which the
    ``tensorrt-segmented`` runtime chains every sub-network: 8 engines holding each
    weight about once, instead of 16 engines with 16 copies, for ResNet50-ADN.
    Segments build in fp32 or fp16, and in int8/best on TensorRT 10 with ``calib``
    (each segment calibrated on the images carried through the segments before it).

    Batch sizes left as None default to 1/1/8 for a dynamic-batch export and to the
    exported batch for a static one. ``calib`` is a folder of images for INT8
    calibration; ``timing_cache`` defaults to one file per TensorRT version and GPU
    beside the engines (:func:`~adn_edge.backends.tensorrt.plan.timing_cache_file`).
    Returns one result dict per sub-network, in build order.

    Raises :class:`AdnError` for bad input (TensorRT missing included),
    :class:`BuildFailure` when TensorRT fails or an engine lacks the precision asked
    for (:class:`PrecisionMismatch`); engines finished before that stay recorded.
    """
    directory = Path(directory)
    data = manifest_mod.load(directory)
    units = _units(data, subnets, segments)
    options = make_options(data["input"], precision, min_batch, opt_batch, max_batch, workspace_mb, opt_level)
    profiles = {u.key: profile_shapes(u.input_spec, options, image=u.segment in (None, 0)) for u in units}
    total = len(units)

    def emit(kind: str, index: int, code: str | None, message: str) -> None:
        if kind == "warning":
            log.warning("%s", message)
        if progress is not None:
            progress(BuildEvent(kind, index, total, code, message))

    calib_set: CalibrationSet | None = None
    if calib is not None:
        if options.precision in ("int8", "best"):
            calib_set = CalibrationSet.open(calib, Preprocess.from_manifest(data["input"]), options.calib_batch)
            if static_batch(data["input"]) is not None and calib_set.batch_size != options.calib_batch:
                raise AdnError(f"The graphs have a static batch of {options.calib_batch}, but --calib holds only "
                               f"{len(calib_set.images)} images.", "Add more calibration images.")
            for w in calib_set.warnings:
                emit("warning", 0, None, w)
        else:
            emit("warning", 0, None, f"--calib is only used for int8/best engines; ignored for {options.precision}.")
    if timing_cache is not None and Path(timing_cache).is_dir():
        raise AdnError(f"--timing-cache {str(timing_cache)!r} is a directory; give a file name.")

    calib_data = _calibration_data(directory, data, units, calib_set)

    tc = toolchain if toolchain is not None else _real_toolchain(cuda, device, verbose)
    try:
        cache_path = Path(timing_cache) if timing_cache is not None else \
            directory / timing_cache_file(str(data["arch"]), tc.env)
        digests = {key: d.digest() for key, d in calib_data.items()}
        jobs = plan_unit_builds(directory, str(data["arch"]), units, options, tc.env, calib_set is not None, digests,
                                force)
        if any(j.action == "build" for j in jobs):
            emit("info", 0, None, tc.load_timing_cache(cache_path))
        results: list[dict[str, Any]] = []
        for i, job in enumerate(jobs, 1):
            if job.action == "skip":
                results.append(_result(job, "skipped", tc.env, rec=_unit(job).engines.get(job.precision)))
                emit("skipped", i, job.code, f"{job.engine}: up to date")
                continue
            emit("start", i, job.code, f"{job.engine}: building from {job.source.describe()} ({job.reason})")
            try:
                rec, result = _build_one(directory, job, options, profiles[job.code], tc, cache_path,
                                         calib_data.get(job.code), digests.get(job.code))
            finally:
                # Tactics timed so far are valid even when this engine failed.
                tc.save_timing_cache(cache_path)
            _unit(job).engines[job.precision] = rec  # a live dict inside `data`
            manifest_mod.save(directory, data)  # after each: a crash keeps what was built
            results.append(result)
            for w in result["warnings"]:
                if calib_set is None or w not in calib_set.warnings:  # those were reported up front
                    emit("warning", i, job.code, w)
            emit("built", i, job.code, f"{job.engine}: {result['observed']} in {rec['build_seconds']:.1f} s")
        return results
    finally:
        if toolchain is None:
            tc.close()


def _units(data: dict[str, Any], subnets: str | Iterable[str] | None, segments: bool) -> list[Unit]:
    if not segments:
        return subnet_units(data, manifest_mod.resolve_codes(data, subnets))
    asked = [subnets] if isinstance(subnets, str) else list(subnets or [])
    if any(str(s).strip().lower() != "all" for s in asked):
        raise AdnError("--segments builds the segment engines, which chain into every sub-network; --subnet does "
                       "not apply to them.", "Leave --subnet out (or build monolithic engines without --segments).")
    return segment_units(data)


def _calibration_data(directory: Path, data: dict[str, Any], units: list[Unit],
                      images: CalibrationSet | None) -> dict[str, CalibrationData]:
    """What each unit calibrates on: the images for sub-networks and segment 0, the
    images carried through the preceding segments for the other segments."""
    if images is None:
        return {}
    if not any(u.segment for u in units):
        return {u.key: images for u in units}
    from adn_edge.backends.tensorrt.segment_calibration import SegmentCalibration, SegmentChain

    chain = SegmentChain(directory, data["segments"]["parts"])
    return {u.key: SegmentCalibration(images, chain, u.segment) if u.segment else images for u in units}


def _unit(job: Job) -> Unit:
    assert job.unit is not None, "jobs of build_directory come from plan_unit_builds"
    return job.unit


def _build_one(
    directory: Path,
    job: Job,
    options: BuildOptions,
    profile: ProfileShapes,
    tc: Toolchain,
    cache_path: Path,
    calib_set: CalibrationData | None,
    digest: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    onnx_path = manifest_mod.verify_file(directory, dict(job.source_record))
    onnx_bytes = onnx_path.read_bytes()
    existing = _unit(job).engines.get(job.precision)
    calibration: CalibrationPlan | None = None
    if job.source.calibrate and job.calibration_cache is not None:
        cal_path = directory / job.calibration_cache
        reuse = reuse_calibration_cache(existing, cal_path, digest)
        if not reuse and calib_set is None:
            raise AdnError(f"The calibration cache {job.calibration_cache} cannot be used for {job.engine}.",
                           "Pass --calib IMAGES_DIR to calibrate again.")
        calibration = CalibrationPlan(cal_path, reuse, calib_set)
    built = tc.build(job, onnx_path, onnx_bytes, options, profile, calibration)
    summary = summarize(built.inspector_json)
    warnings = verify(summary, job.precision, job.engine)  # PrecisionMismatch: nothing is written
    write_bytes(directory / job.engine, built.plan)
    cal_record: dict[str, Any] | None = None
    if calibration is not None:
        old = (existing or {}).get("calibration") or {}
        cal_record = {
            "cache": job.calibration_cache,
            "cache_sha256": sha256_file(calibration.cache_path) if calibration.cache_path.exists() else None,
            "reused_cache": calibration.reuse_cache,
            "batches": built.calibration_batches,
        }
        if calib_set is not None and not calibration.reuse_cache:
            cal_record.update(calib_set.as_record())
            warnings = [*calib_set.warnings, *warnings]
        else:  # the cache stands for the images that made it
            cal_record.update({k: v for k, v in old.items() if k not in cal_record})
    rec = engine_record(directory, job, tc.env, options, summary.as_record(), built.seconds,
                        _relative(directory, cache_path), cal_record)
    result = _result(job, "built", tc.env, rec=rec, warnings=warnings)
    result["tensorrt_warnings"] = list(built.log)
    return rec, result


def _result(job: Job, status: str, env: Environment, rec: Mapping[str, Any] | None = None,
            warnings: list[str] | None = None) -> dict[str, Any]:
    rec = rec or {}
    observed = rec.get("precision_observed") or {}
    counts = observed.get("by_precision") or {}
    return {
        "code": job.code,
        "precision": job.precision,
        "engine": job.engine,
        "status": status,
        "reason": job.reason,
        "source": job.source.describe(),
        "build_seconds": rec.get("build_seconds"),
        "observed": precision_label(counts) if counts else "-",
        "precision_observed": observed,
        "tensorrt_version": env.tensorrt_version,
        "gpu": env.gpu,
        "compute_capability": env.compute_capability,
        "sha256": rec.get("sha256"),
        "warnings": list(warnings or []),
    }
