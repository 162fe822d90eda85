"""build_directory end to end, with a fake TensorRT toolchain: manifest records, skips,
rebuilds, the shared timing cache, precision verification, INT8 calibration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _buildkit import FakeToolchain, inspector, make_model_dir, tiny_onnx, write_pngs

from adn_edge.modeldir import manifest
from adn_edge.backends.tensorrt.build import BuildEvent, PrecisionMismatch, build_directory
from adn_edge.backends.tensorrt.env import Environment
from adn_edge.errors import AdnError
from adn_edge.fileio import sha256_file, write_bytes

TIMING_CACHE = "tiny.trt10.3.0-orin-nvgpu-cc87-8sm.timing.cache"
"""The default timing cache of FakeToolchain's TensorRT 10.3.0 on an 8-SM Orin."""
CALIB_11 = "tiny_11.trt10.3.0.int8.calib"
"""Sub-network 11's calibration cache on TensorRT 10.3.0 (the scales do not depend on the GPU)."""


def test_builds_every_exported_subnet(model_dir: Path, fake: FakeToolchain) -> None:
    events: list[BuildEvent] = []
    results = build_directory(model_dir, toolchain=fake, progress=events.append)
    assert [r["code"] for r in results] == ["11", "01"]  # super-net first
    assert all(r["status"] == "built" and r["observed"] == "fp16" for r in results)
    data = manifest.load(model_dir)
    for code in ("11", "01"):
        rec = data["subnets"][code]["engines"]["fp16"]
        engine = model_dir / f"tiny_{code}.fp16.engine"
        assert rec["path"] == engine.name and rec["sha256"] == sha256_file(engine)
        assert rec["precision"] == "fp16"
        assert rec["precision_observed"]["by_precision"] == {"FP16": 3}
        assert (rec["tensorrt_version"], rec["gpu"], rec["compute_capability"]) == ("10.3.0", "Orin (nvgpu)", "8.7")
        assert rec["build_seconds"] == 0.25 and rec["built_at"]
        assert rec["options"]["max_batch"] == 8
        assert rec["source"]["key"] == "onnx"
        assert rec["source"]["sha256"] == data["subnets"][code]["files"]["onnx"]["sha256"]
        assert rec["timing_cache"] == TIMING_CACHE
        assert (rec["sm_count"], rec["gpu_memory_mib"]) == (8, 7619)  # what tells Orin modules apart
    # one timing cache for the whole model and this TensorRT + GPU, beside the engines, saved after each engine
    assert fake.cache_loads == [model_dir / TIMING_CACHE]
    assert fake.cache_saves == [model_dir / TIMING_CACHE] * 2
    assert [b["job"].source.fp16_flag for b in fake.builds] == [True, True]
    profile = fake.builds[0]["profile"]
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 8, 8), (1, 3, 8, 8), (8, 3, 8, 8))
    assert [e.kind for e in events if e.kind in ("start", "built")] == ["start", "built", "start", "built"]


def test_second_build_skips_and_changes_rebuild(model_dir: Path, fake: FakeToolchain) -> None:
    build_directory(model_dir, toolchain=fake)
    again = FakeToolchain()
    results = build_directory(model_dir, toolchain=again)
    assert [r["status"] for r in results] == ["skipped", "skipped"] and again.builds == []
    assert again.cache_loads == []  # nothing to build, cache untouched
    assert results[0]["observed"] == "fp16"  # reported from the manifest record

    # new build options rebuild everything
    r = build_directory(model_dir, max_batch=16, toolchain=FakeToolchain())
    assert [x["reason"] for x in r] == ["options changed (max_batch 8 -> 16)"] * 2

    # a re-exported graph rebuilds only its engine
    data = manifest.load(model_dir)
    write_bytes(model_dir / "tiny_01.onnx", tiny_onnx(7))
    data["subnets"]["01"]["files"]["onnx"] = manifest.file_record(model_dir, "tiny_01.onnx")
    manifest.save(model_dir, data)
    r = build_directory(model_dir, max_batch=16, toolchain=FakeToolchain())
    assert [(x["code"], x["status"], x["reason"]) for x in r] == [
        ("11", "skipped", "up to date"), ("01", "built", "ONNX graph changed")]

    # another TensorRT (or GPU) rebuilds everything
    newer = FakeToolchain(Environment("10.4.0", "Orin (nvgpu)", "8.7"))
    r = build_directory(model_dir, max_batch=16, toolchain=newer)
    assert {x["reason"] for x in r} == {"TensorRT 10.3.0 -> 10.4.0"}

    # a damaged engine file is rebuilt, --force rebuilds the rest
    write_bytes(model_dir / "tiny_11.fp16.engine", b"junk")
    r = build_directory(model_dir, max_batch=16, toolchain=newer)
    assert [x["reason"] for x in r] == ["engine file changed since it was built", "up to date"]
    r = build_directory(model_dir, max_batch=16, force=True, toolchain=newer)
    assert {x["reason"] for x in r} == {"forced (--force)"}


def test_engines_of_several_precisions_coexist(model_dir: Path, fake: FakeToolchain) -> None:
    build_directory(model_dir, subnets="11", precision="fp16", toolchain=fake)
    build_directory(model_dir, subnets="11", precision="fp32", toolchain=fake)
    engines = manifest.load(model_dir)["subnets"]["11"]["engines"]
    assert set(engines) == {"fp16", "fp32"}
    assert (model_dir / "tiny_11.fp32.engine").exists() and (model_dir / "tiny_11.fp16.engine").exists()
    assert fake.builds[1]["job"].source.fp16_flag is False


def test_subnet_selection(model_dir: Path, fake: FakeToolchain) -> None:
    data = manifest.load(model_dir)
    assert manifest.resolve_codes(data, None) == ["11", "01"]
    assert manifest.resolve_codes(data, ["TF", "super"]) == ["01", "11"]  # official T/F spelling, normalised
    assert manifest.resolve_codes(data, "01,all") == ["01", "11"]
    with pytest.raises(AdnError, match="not in this model directory"):
        manifest.resolve_codes(data, ["base"])
    with pytest.raises(AdnError, match="not a sub-network code"):
        manifest.resolve_codes(data, ["10101"])
    r = build_directory(model_dir, subnets=["TF"], toolchain=fake)
    assert [x["code"] for x in r] == ["01"]


def test_fp16_that_came_out_fp32_is_not_published(model_dir: Path) -> None:
    fallback = FakeToolchain(inspect=lambda job: inspector("fp32_trt10"))
    with pytest.raises(PrecisionMismatch, match="without any FP16 layer"):
        build_directory(model_dir, toolchain=fallback)
    assert not (model_dir / "tiny_11.fp16.engine").exists()
    assert "engines" not in manifest.load(model_dir)["subnets"]["11"]
    assert fallback.cache_saves  # timed tactics are kept even so


def test_static_batch_export(tmp_path: Path, fake: FakeToolchain) -> None:
    d = make_model_dir(tmp_path, static_batch=1)
    build_directory(d, toolchain=fake)
    p = fake.builds[0]["profile"]
    assert p.min == p.opt == p.max == (1, 3, 8, 8)
    with pytest.raises(AdnError, match="static batch of 1"):
        build_directory(d, max_batch=4, toolchain=fake)


def test_custom_timing_cache_path(model_dir: Path, fake: FakeToolchain, tmp_path: Path) -> None:
    cache = tmp_path / "shared" / "all.cache"
    build_directory(model_dir, timing_cache=cache, toolchain=fake)
    assert fake.cache_loads == [cache] and cache.exists()
    assert manifest.load(model_dir)["subnets"]["11"]["engines"]["fp16"]["timing_cache"] == str(cache)
    with pytest.raises(AdnError, match="is a directory"):
        build_directory(model_dir, timing_cache=tmp_path, toolchain=fake)


def test_int8_needs_calibration_or_qdq(model_dir: Path, fake: FakeToolchain) -> None:
    with pytest.raises(AdnError, match="INT8 scales") as e:
        build_directory(model_dir, precision="int8", toolchain=fake)
    assert "--calib" in (e.value.hint or "")


def test_int8_calibration_and_its_cache(model_dir: Path, tmp_path: Path, fake: FakeToolchain) -> None:
    write_pngs(tmp_path / "calib", 5, size=(12, 10))
    events: list[BuildEvent] = []
    results = build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib",
                              toolchain=fake, progress=events.append)
    cal = fake.builds[0]["calibration"]
    assert cal is not None and cal.reuse_cache is False and cal.data is not None
    assert cal.cache_path == model_dir / CALIB_11
    assert cal.data.batch_size == 5  # 5 images < calibration batch 8
    rec = manifest.load(model_dir)["subnets"]["11"]["engines"]["int8"]
    assert rec["calibration"]["cache"] == CALIB_11
    assert rec["calibration"]["cache_sha256"] == sha256_file(model_dir / CALIB_11)
    assert rec["calibration"]["images"] == 5 and rec["calibration"]["batches"] == 1
    assert rec["options"]["calib_batch"] == 8
    assert any("Only 5 calibration images" in w for w in results[0]["warnings"])
    assert any(e.kind == "warning" and "Only 5" in e.message for e in events)

    # same images again, or no --calib at all: up to date (the cache stands for the images)
    again = FakeToolchain()
    assert build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib",
                           toolchain=again)[0]["status"] == "skipped"
    assert build_directory(model_dir, subnets="11", precision="int8", toolchain=again)[0]["status"] == "skipped"

    # rebuilt without --calib: TensorRT is handed the cache, not images
    build_directory(model_dir, subnets="11", precision="int8", force=True, toolchain=again)
    cal = again.builds[-1]["calibration"]
    assert cal.reuse_cache is True and cal.data is None
    assert manifest.load(model_dir)["subnets"]["11"]["engines"]["int8"]["calibration"]["images"] == 5

    # other images: recalibrate
    write_pngs(tmp_path / "calib", 5, size=(12, 10), seed=9)
    r = build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib", toolchain=again)
    assert r[0]["reason"] == "calibration images changed"
    assert again.builds[-1]["calibration"].reuse_cache is False


def test_calib_ignored_for_fp16(model_dir: Path, tmp_path: Path, fake: FakeToolchain) -> None:
    events: list[BuildEvent] = []
    build_directory(model_dir, calib=tmp_path / "nowhere", toolchain=fake, progress=events.append)
    assert any(e.kind == "warning" and "only used for int8" in e.message for e in events)


def test_trt11_builds_fp16_from_the_float16_graph(tmp_path: Path) -> None:
    trt11 = FakeToolchain(Environment("11.0.0", "NVIDIA H100 80GB HBM3", "9.0"),
                          inspect=lambda job: inspector("fp16_trt11"))
    with pytest.raises(AdnError, match="export --fp16"):
        build_directory(make_model_dir(tmp_path / "a"), toolchain=trt11)
    d = make_model_dir(tmp_path / "b", fp16_files=True)
    r = build_directory(d, toolchain=trt11)
    assert all("onnx_fp16 (strongly typed)" == x["source"] for x in r)
    assert trt11.builds[0]["onnx"] == "tiny_11.fp16.onnx"
    rec = manifest.load(d)["subnets"]["11"]["engines"]["fp16"]
    assert rec["source"] == {"key": "onnx_fp16", "path": "tiny_11.fp16.onnx",
                             "sha256": sha256_file(d / "tiny_11.fp16.onnx"), "strongly_typed": True}


def test_tampered_onnx_is_refused(model_dir: Path, fake: FakeToolchain) -> None:
    write_bytes(model_dir / "tiny_11.onnx", b"not the exported graph")
    with pytest.raises(AdnError, match="does not match the sha256"):
        build_directory(model_dir, toolchain=fake)


def test_bad_input_reported_before_tensorrt(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    with pytest.raises(AdnError, match="does not exist"):
        build_directory(tmp_path / "nope")
    with pytest.raises(AdnError, match="not a build precision"):
        build_directory(model_dir, precision="fp64")
    with pytest.raises(AdnError, match="not a sub-network code"):
        build_directory(model_dir, subnets=["123"])
    with pytest.raises(AdnError, match="calibration folder"):
        build_directory(model_dir, precision="int8", calib=tmp_path / "missing")


def test_without_tensorrt_says_what_to_install(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(AdnError) as e:
        build_directory(model_dir)
    text = e.value.paragraph()
    assert "TensorRT is not installed" in text
    for needle in ("python3-libnvinfer", "pycuda", "cuda-python", "tensorrt-cu12", "Jetson", "x86"):
        assert needle in text
    assert e.value.exit_code == 2


def test_static_int8_needs_a_full_calibration_batch(tmp_path: Path, fake: FakeToolchain) -> None:
    d = make_model_dir(tmp_path, static_batch=4)
    write_pngs(tmp_path / "few", 3)
    with pytest.raises(AdnError, match="static batch of 4"):
        build_directory(d, precision="int8", calib=tmp_path / "few", toolchain=fake)
    write_pngs(tmp_path / "enough", 9)
    build_directory(d, precision="int8", calib=tmp_path / "enough", toolchain=fake)
    assert fake.builds[0]["calibration"].data.batch_size == 4


def test_swapped_engine_records_are_refused_before_loading(model_dir: Path, fake: FakeToolchain) -> None:
    """Hashes intact, records swapped: each engine names the graph it was built from."""
    from adn_edge.backends.tensorrt.chain import monolithic_layout

    build_directory(model_dir, toolchain=fake)
    data = manifest.load(model_dir)
    assert monolithic_layout(data, ["11", "01"], "fp16").precision == "fp16"
    a, b = data["subnets"]["11"]["engines"], data["subnets"]["01"]["engines"]
    a["fp16"], b["fp16"] = b["fp16"], a["fp16"]
    with pytest.raises(AdnError, match=r"listed as the engine of sub-network 11, but it was built from "
                                       r"'tiny_01.onnx'"):
        monolithic_layout(data, ["11", "01"], "fp16")
