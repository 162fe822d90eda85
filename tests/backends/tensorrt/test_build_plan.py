"""Rebuild decisions, graph selection per TensorRT version, and load-time refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from adn_edge.modeldir import manifest
from adn_edge.backends.tensorrt.options import make_options
from adn_edge.backends.tensorrt.plan import (
    PRECISION_SUPPORT, Source, plan_unit_builds, reuse_calibration_cache, select_source, staleness,
)
from adn_edge.backends.tensorrt.units import subnet_units
from adn_edge.backends.tensorrt.env import Environment, tensorrt_major
from adn_edge.modeldir.names import calibration_cache_name, engine_name, timing_cache_name
from adn_edge.backends.tensorrt.engines import check_engine_compatible, choose_precision, engine_for
from adn_edge.errors import AdnError
from adn_edge.fileio import sha256_file, write_bytes

ENV = Environment("10.3.0", "Orin (nvgpu)", "8.7")
SPEC = {"name": "input", "shape": [None, 3, 8, 8]}
F32 = {"onnx": {"path": "m.onnx", "sha256": "a"}}
ALL = {**F32, "onnx_fp16": {"path": "m.fp16.onnx", "sha256": "b"}, "onnx_int8": {"path": "m.int8.onnx", "sha256": "c"}}


def test_names_follow_the_contract() -> None:
    assert engine_name("resnet50", "1010", "fp16") == "resnet50_1010.fp16.engine"
    assert timing_cache_name("resnet50") == "resnet50.timing.cache"
    assert calibration_cache_name("resnet50", "0101") == "resnet50_0101.int8.calib"


def test_major_version() -> None:
    assert tensorrt_major("10.3.0.30") == 10 and tensorrt_major("11.0") == 11
    with pytest.raises(AdnError):
        tensorrt_major("x.y")


# ------------------------------------------------------------------ sources


@pytest.mark.parametrize("precision,calibrate,want", [
    ("fp32", False, Source("onnx", False, False, False, False)),
    ("fp16", False, Source("onnx", False, True, False, False)),
    ("int8", True, Source("onnx", False, False, True, True)),
    ("best", True, Source("onnx", False, True, True, True)),
    ("int8", False, Source("onnx_int8", False, False, True, False)),  # explicit quantisation
    ("best", False, Source("onnx_int8", False, True, True, False)),
])
def test_trt10_builds_from_fp32_graph_with_flags(precision: str, calibrate: bool, want: Source) -> None:
    assert select_source(ALL, precision, 10, calibrate, "11") == want


def test_trt10_int8_needs_scales() -> None:
    with pytest.raises(AdnError, match="calibration images or a Q/DQ graph") as e:
        select_source(F32, "int8", 10, False, "11")
    assert "--calib" in (e.value.hint or "")


@pytest.mark.parametrize("precision,files,key", [
    ("fp32", ALL, "onnx"), ("fp16", ALL, "onnx_fp16"), ("int8", ALL, "onnx_int8"), ("best", ALL, "onnx_int8"),
    ("best", {**F32, "onnx_fp16": ALL["onnx_fp16"]}, "onnx_fp16"),
])
def test_trt11_is_strongly_typed(precision: str, files: dict, key: str) -> None:
    src = select_source(files, precision, 11, calibrate=True, code="11")
    assert src == Source(key, True, False, False, False)  # no flags, no calibrator on 11.x
    assert "strongly typed" in src.describe()


def test_trt11_fp16_without_float16_export_explains() -> None:
    with pytest.raises(AdnError, match="strongly typed") as e:
        select_source(F32, "fp16", 11, False, "11")
    assert "export --fp16" in (e.value.hint or "")
    assert "11.x" in PRECISION_SUPPORT[11] and "10.x" in PRECISION_SUPPORT[10]


def test_trt8_refused() -> None:
    with pytest.raises(AdnError, match="too old"):
        select_source(ALL, "fp16", 8, False, "11")


# ------------------------------------------------------------------ staleness


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, dict]:
    engine = tmp_path / "tiny_11.fp16.engine"
    write_bytes(engine, b"plan")
    opts = make_options(SPEC, "fp16")
    record = {"path": engine.name, "sha256": sha256_file(engine), "source": {"key": "onnx", "sha256": "a"},
              **ENV.as_record(), "options": opts.record()}
    return engine, record


def _stale(engine: Path, record: dict | None, **over) -> str | None:
    opts = over.pop("options", make_options(SPEC, "fp16"))
    env = over.pop("env", ENV)
    src = select_source(F32, opts.precision, env.trt_major, over.pop("calibrate", False), "11")
    return staleness(record, engine, src, over.pop("source_record", F32["onnx"]), opts, env, over.pop("digest", None))


def test_up_to_date(built: tuple[Path, dict]) -> None:
    engine, rec = built
    assert _stale(engine, rec) is None


def test_every_cause_of_a_rebuild(built: tuple[Path, dict]) -> None:
    engine, rec = built
    assert _stale(engine, None) == "not built yet"
    assert "ONNX graph changed" == _stale(engine, rec, source_record={"path": "m.onnx", "sha256": "new"})
    assert "TensorRT 10.3.0 -> 10.4.0" == _stale(engine, rec, env=Environment("10.4.0", ENV.gpu, "8.7"))
    gpu = _stale(engine, rec, env=Environment("10.3.0", "NVIDIA GeForce RTX 4090", "8.9"))
    assert gpu is not None and "built for Orin (nvgpu)" in gpu and "RTX 4090" in gpu
    changed = _stale(engine, rec, options=make_options(SPEC, "fp16", max_batch=16))
    assert changed == "options changed (max_batch 8 -> 16)"
    assert _stale(engine, {**rec, "source": {"key": "onnx_fp16", "sha256": "a"}}) == "graph 'onnx_fp16' -> 'onnx'"
    write_bytes(engine, b"tampered")
    assert _stale(engine, rec) == "engine file changed since it was built"
    engine.unlink()
    assert _stale(engine, rec) == "engine file missing"


def test_calibration_images_changing_rebuilds_int8(tmp_path: Path) -> None:
    engine = tmp_path / "e.engine"
    write_bytes(engine, b"plan")
    opts = make_options(SPEC, "int8")
    rec = {"sha256": sha256_file(engine), "source": {"key": "onnx", "sha256": "a"}, **ENV.as_record(),
           "options": opts.record(), "calibration": {"images_sha256": "d1"}}
    assert _stale(engine, rec, options=opts, calibrate=True, digest="d1") is None
    assert _stale(engine, rec, options=opts, calibrate=True, digest=None) is None  # no --calib: the cache stands
    assert _stale(engine, rec, options=opts, calibrate=True, digest="d2") == "calibration images changed"


def test_calibration_cache_reuse(tmp_path: Path) -> None:
    cache = tmp_path / "c.calib"
    assert not reuse_calibration_cache(None, cache, None)
    write_bytes(cache, b"cache")
    assert reuse_calibration_cache(None, cache, None)
    rec = {"calibration": {"images_sha256": "d1", "cache_sha256": sha256_file(cache)}}
    assert reuse_calibration_cache(rec, cache, "d1")
    assert not reuse_calibration_cache(rec, cache, "d2")
    write_bytes(cache, b"other cache")
    assert not reuse_calibration_cache(rec, cache, "d1")


def test_plan_builds_over_a_model_dir(model_dir: Path) -> None:
    data = manifest.load(model_dir)
    opts = make_options(data["input"], "fp16")
    jobs = plan_unit_builds(model_dir, str(data["arch"]), subnet_units(data, ["11", "01"]), opts, ENV, calibrate=False)
    assert [(j.code, j.action, j.engine, j.reason) for j in jobs] == [
        ("11", "build", "tiny_11.fp16.engine", "not built yet"),
        ("01", "build", "tiny_01.fp16.engine", "not built yet"),
    ]
    forced = plan_unit_builds(model_dir, str(data["arch"]), subnet_units(data, ["11"]), opts, ENV, calibrate=False, force=True)
    assert forced[0].reason == "forced (--force)"
    with pytest.raises(AdnError, match="not in this model directory"):
        plan_unit_builds(model_dir, str(data["arch"]), subnet_units(data, ["00"]), opts, ENV, calibrate=False)


# ------------------------------------------------------------------ runtime side


def test_engine_for_another_tensorrt_is_refused() -> None:
    rec = {"path": "tiny_11.fp16.engine", **ENV.as_record()}
    check_engine_compatible(rec, ENV, "11")
    with pytest.raises(AdnError, match="TensorRT 10.3.0, but this machine has TensorRT 10.4.0") as e:
        check_engine_compatible(rec, Environment("10.4.0", ENV.gpu, ENV.compute_capability), "11")
    assert "adn-edge build" in (e.value.hint or "")


def test_engine_for_another_gpu_is_refused() -> None:
    rec = {"path": "tiny_11.fp16.engine", **ENV.as_record()}
    with pytest.raises(AdnError, match="built for Orin"):
        check_engine_compatible(rec, Environment("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"), "11")
    with pytest.raises(AdnError, match="compute capability"):
        check_engine_compatible(rec, Environment("10.3.0", "Orin (nvgpu)", "8.6"), "11")


def test_choose_precision() -> None:
    m = {"subnets": {"11": {"engines": {"fp16": {}, "fp32": {}}}, "01": {"engines": {"fp32": {}}}}}
    assert choose_precision(m, ["11"], None) == "fp16"
    assert choose_precision(m, ["11", "01"], None) == "fp32"
    assert choose_precision(m, ["11"], "FP32") == "fp32"
    with pytest.raises(AdnError, match="No fp16 TensorRT engine for sub-network"):
        choose_precision(m, ["11", "01"], "fp16")
    with pytest.raises(AdnError, match="not an engine precision"):
        choose_precision(m, ["11"], "fp64")
    with pytest.raises(AdnError, match="No TensorRT engine"):
        choose_precision({"subnets": {"11": {}}}, ["11"], None)
    assert engine_for(m, "11", "fp16") == {}
    with pytest.raises(AdnError, match="no int8 engine"):
        engine_for(m, "11", "int8")
