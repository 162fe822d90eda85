"""The real builder and runner against TensorRT 10.3, 10.16 and 11.1 (the test double).

``builder.py`` and ``runner.py`` run unmodified; ``import tensorrt`` is the
version-faithful double of ``tests/runtime/_fake_tensorrt.py`` (exactly one release's
names, from ``tests/fixtures/tensorrt/``), CUDA is the double of ``_fake_cuda.py`` under
the real ``CudaPython``. The model is ``_buildkit``'s tiny two-sub-network directory, so
the whole file runs in seconds per version. Each test of a defect of issue 12 says which;
every one of them fails on the code before its fix.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from _buildkit import make_model_dir, write_pngs

from adn_edge.backends.tensorrt.build import BuildEvent, build_directory
from adn_edge.backends.tensorrt.precision import PrecisionMismatch, summarize, verify
from adn_edge.errors import AdnError, BuildFailure
from adn_edge.fileio import write_bytes
from adn_edge.modeldir import manifest
from tests.runtime import _fake_tensorrt as fake

TAGS = fake.TAGS


@pytest.fixture(params=TAGS)
def trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> fake.Installed:
    return fake.install(monkeypatch, request.param)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path, fp16_files=True)


def engine_header(d: Path, code: str, precision: str) -> dict:
    rec = manifest.load(d)["subnets"][code]["engines"][precision]
    return fake.plan_header((d / rec["path"]).read_bytes())


# --------------------------------------------------------------------------- the double is faithful


def test_the_double_exposes_exactly_one_release(trt: fake.Installed) -> None:
    """What is not in a release's listing does not exist, as on the real module; what is
    listed but not implemented by the double says so instead of passing for absent."""
    api = fake.listing(trt.tag)
    t = trt.trt
    for name in ("Builder", "Runtime", "OnnxParser", "ILogger", "BuilderFlag", "ProfilingVerbosity"):
        assert name in api["module"] and hasattr(t, name)
    with pytest.raises(AttributeError):
        t.NoSuchThing  # noqa: B018
    with pytest.raises(NotImplementedError, match="does not implement trt.get_plugin_registry"):
        t.get_plugin_registry  # noqa: B018
    has_calibrator = "IInt8EntropyCalibrator2" in api["module"]
    assert hasattr(t, "IInt8EntropyCalibrator2") == has_calibrator == (trt.tag != "11.1")
    assert hasattr(t.BuilderFlag, "FP16") == (trt.tag != "11.1") and hasattr(t.BuilderFlag, "TF32")
    config = t.Builder(t.Logger(t.Logger.WARNING)).create_builder_config()
    assert hasattr(config, "int8_calibrator") == (trt.tag != "11.1")
    if trt.tag == "11.1":
        with pytest.raises(AttributeError, match="int8_calibrator"):
            config.int8_calibrator = None
    with pytest.raises(AttributeError, match="no attribute 'context'"):  # pybind11 objects take no new attributes
        config.context = None
    assert config.get_flag(t.BuilderFlag.TF32)  # TensorRT's default


# --------------------------------------------------------------------------- building


def test_builder_imports_and_builds_on_every_version(trt: fake.Installed, model_dir: Path) -> None:
    """Defect 1: builder.py subclassed trt.IInt8EntropyCalibrator2 at module level, so on
    TensorRT 11 (no calibrator classes) importing it raised AttributeError and every
    build failed, fp16 included."""
    sys_builder = importlib.import_module("adn_edge.backends.tensorrt.builder")
    assert sys_builder.trt is trt.trt
    events: list[BuildEvent] = []
    results = build_directory(model_dir, precision="fp16", max_batch=4, progress=events.append)
    assert [(r["status"], r["observed"]) for r in results] == [("built", "fp16")] * 2
    rec = manifest.load(model_dir)["subnets"]["11"]["engines"]["fp16"]
    assert (rec["tensorrt_version"], rec["gpu"], rec["sm_count"], rec["gpu_memory_mib"]) == (
        trt.version, "Orin (nvgpu)", 8, 7619)
    header = engine_header(model_dir, "11", "fp16")
    if trt.tag == "11.1":  # strongly typed, from the float16 graph: no precision flags exist
        assert rec["source"]["key"] == "onnx_fp16" and header["strongly_typed"] and "FP16" not in header["flags"]
    else:
        assert rec["source"]["key"] == "onnx" and not header["strongly_typed"] and "FP16" in header["flags"]
    assert header["profiling_verbosity"] == "DETAILED"  # for the inspector's precision check
    assert rec["precision_observed"]["detailed"] is True


def test_fp32_engines_are_built_without_tf32(trt: fake.Installed, model_dir: Path) -> None:
    """Defect 4: TF32 is on by default in TensorRT builds, so an "fp32" engine computed its
    convolutions in TF32 on Orin; it is cleared for fp32 and recorded."""
    build_directory(model_dir, precision="fp32", max_batch=4)
    header = engine_header(model_dir, "11", "fp32")
    assert "TF32" not in header["flags"] and not set(header["flags"]) & {"FP16", "INT8"}
    rec = manifest.load(model_dir)["subnets"]["11"]["engines"]["fp32"]
    assert rec["options"]["tf32"] is False
    # an fp32 engine recorded before (TensorRT's default, TF32 on) is rebuilt
    m = manifest.load(model_dir)
    del m["subnets"]["11"]["engines"]["fp32"]["options"]["tf32"]
    manifest.save(model_dir, m)
    again = build_directory(model_dir, subnets="11", precision="fp32", max_batch=4)
    assert again[0]["reason"] == "options changed (tf32 None -> False)"
    # fp16 keeps TensorRT's default for the layers left in float
    build_directory(model_dir, subnets="11", precision="fp16", max_batch=4)
    assert "tf32" not in manifest.load(model_dir)["subnets"]["11"]["engines"]["fp16"]["options"]


def test_parser_errors_name_the_node(trt: fake.Installed, model_dir: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["r"], name="/ok"),
         helper.make_node("FancyPool", ["r"], ["logits"], name="/pool/FancyPool")],
        "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m = manifest.load(model_dir)
    for key, blob in (("onnx", model.SerializeToString()), ("onnx_fp16", b"not an onnx graph")):
        name = f"tiny_11{'.fp16' if key == 'onnx_fp16' else ''}.onnx"
        write_bytes(model_dir / name, blob)
        m["subnets"]["11"]["files"][key] = manifest.file_record(model_dir, name)
    manifest.save(model_dir, m)
    precision = "fp16" if trt.tag == "11.1" else "fp32"  # 11.x builds fp16 from the (broken) float16 graph
    with pytest.raises(BuildFailure) as e:
        build_directory(model_dir, subnets="11", precision=precision)
    if trt.tag == "11.1":
        assert "graph: MODEL_DESERIALIZE_FAILED" in e.value.message
    else:
        assert "node 1 '/pool/FancyPool' (FancyPool): UNSUPPORTED_NODE" in e.value.message
    assert f"TensorRT {trt.version}'s ONNX parser rejected" in e.value.message


def test_the_inspector_json_of_each_release_is_read(trt: fake.Installed, model_dir: Path) -> None:
    """10.x writes ``Format/Datatype``, 11.x ``DataType``; both must count layers, and an
    engine built without DETAILED verbosity must be refused, not labelled."""
    t = trt.trt
    build_directory(model_dir, precision="fp16", max_batch=4)
    rec = manifest.load(model_dir)["subnets"]["01"]["engines"]["fp16"]
    assert rec["precision_observed"]["by_precision"]["FP16"] >= 3
    plan = (model_dir / rec["path"]).read_bytes()
    engine = t.Runtime(t.Logger(t.Logger.WARNING)).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    ctx.set_input_shape("input", (1, 3, 8, 8))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = ctx
    text = inspector.get_engine_information(t.LayerInformationFormat.JSON)
    assert ('"DataType": "Half"' in text) == (trt.tag == "11.1") and ("FP16 format" in text) == (trt.tag != "11.1")
    assert verify(summarize(text), "fp16") == []
    # built without DETAILED (TensorRT's default), the inspector lists names only
    logger = t.Logger(t.Logger.WARNING)
    builder = t.Builder(logger)
    network = builder.create_network(0)
    assert t.OnnxParser(network, logger).parse((model_dir / "tiny_01.onnx").read_bytes(), "tiny_01.onnx")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8))
    config.add_optimization_profile(profile)
    plain = t.Runtime(logger).deserialize_cuda_engine(bytes(builder.build_serialized_network(network, config)))
    summary = summarize(plain.create_engine_inspector().get_engine_information(t.LayerInformationFormat.JSON))
    with pytest.raises(PrecisionMismatch, match="layer names only"):
        verify(summary, "fp32")


# --------------------------------------------------------------------------- caches


def test_timing_cache_is_per_version_and_gpu(trt: fake.Installed, model_dir: Path) -> None:
    """Defect 5: one default timing cache per TensorRT version and GPU, reused by the next
    build of the same pair."""
    events: list[BuildEvent] = []
    build_directory(model_dir, precision="fp16", max_batch=4, progress=events.append)
    tag = f"trt{trt.version}-orin-nvgpu-cc87-8sm"
    cache = model_dir / f"tiny.{tag}.timing.cache"
    assert cache.is_file() and [e.message for e in events if e.kind == "info"] == [f"timing cache {cache.name}: new"]
    events.clear()
    build_directory(model_dir, precision="fp16", max_batch=4, force=True, progress=events.append)
    assert [e.message for e in events if e.kind == "info"][0].startswith(f"timing cache {cache.name}: reusing ")
    assert manifest.load(model_dir)["subnets"]["11"]["engines"]["fp16"]["timing_cache"] == cache.name


def test_a_timing_cache_of_another_version_starts_a_new_one(monkeypatch: pytest.MonkeyPatch, model_dir: Path,
                                                            tmp_path: Path) -> None:
    """Defect 5: TensorRT returns no cache for another version's file; set_timing_cache(None)
    and combine(None) raised TypeError, so the build died on the first JetPack upgrade (or
    on a --timing-cache shared between versions)."""
    shared = tmp_path / "shared.timing.cache"
    fake.install(monkeypatch, "10.3")
    build_directory(model_dir, subnets="11", precision="fp16", timing_cache=shared)
    written_by_103 = shared.read_bytes()
    inst = fake.install(monkeypatch, "10.16")
    events: list[BuildEvent] = []
    results = build_directory(model_dir, subnets="11", precision="fp16", timing_cache=shared,
                              progress=events.append)
    assert results[0]["status"] == "built" and results[0]["tensorrt_version"] == inst.version
    assert any("written by another TensorRT/GPU" in e.message for e in events)
    assert shared.read_bytes() != written_by_103 and inst.version.encode() in shared.read_bytes()
    # another process writes a 10.3 cache meanwhile: saving must not combine with "no cache"
    build_directory(model_dir, subnets="01", precision="fp16", timing_cache=shared)
    assert inst.version.encode() in shared.read_bytes()


def test_a_timing_cache_of_another_gpu_is_refused_not_mixed(monkeypatch: pytest.MonkeyPatch, model_dir: Path,
                                                            tmp_path: Path) -> None:
    shared = tmp_path / "shared.timing.cache"
    fake.install(monkeypatch, "10.3", spec=fake.AGX_ORIN_64GB)
    build_directory(model_dir, subnets="11", precision="fp16", timing_cache=shared)
    inst = fake.install(monkeypatch, "10.3")  # an Orin Nano: same version, another GPU
    events: list[BuildEvent] = []
    build_directory(model_dir, subnets="11", precision="fp16", timing_cache=shared, progress=events.append)
    assert any("written by another TensorRT/GPU" in e.message for e in events)
    assert any("created on another device" in msg for _, msg in inst.log)


def test_calibration_caches_are_per_version(monkeypatch: pytest.MonkeyPatch, model_dir: Path,
                                            tmp_path: Path) -> None:
    """Defect 5: a calibration cache is bound to its TensorRT version's format; another
    version must not be handed it as "the calibration"."""
    write_pngs(tmp_path / "calib", 16, size=(12, 10))
    fake.install(monkeypatch, "10.3")
    build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib", max_batch=8)
    assert (model_dir / "tiny_11.trt10.3.0.int8.calib").read_text().startswith("TRT-100300-EntropyCalibration2\n")
    fake.install(monkeypatch, "10.16")
    with pytest.raises(AdnError, match="needs INT8 scales") as e:
        build_directory(model_dir, subnets="11", precision="int8", max_batch=8)
    assert "--calib" in (e.value.hint or "")
    built = build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib", max_batch=8)
    assert built[0]["status"] == "built"
    assert (model_dir / "tiny_11.trt10.16.2.10.int8.calib").read_text().startswith("TRT-101602-EntropyCalibration2")


@pytest.mark.parametrize("tag", ["10.3", "10.16"])
def test_int8_calibrator_protocol(monkeypatch: pytest.MonkeyPatch, model_dir: Path, tmp_path: Path,
                                  tag: str) -> None:
    """TensorRT 10 drives the calibrator: the batches it reads from device memory are the
    preprocessed images; the cache it writes is reused (no batches) on a rebuild."""
    from adn_edge.backends.tensorrt.calibration import CalibrationSet
    from adn_edge.modeldir.preprocess import Preprocess

    inst = fake.install(monkeypatch, tag)
    write_pngs(tmp_path / "calib", 16, size=(12, 10))
    r = build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib", max_batch=8)
    assert r[0]["status"] == "built" and "int8" in r[0]["observed"]  # INT8 convolutions, the rest in float
    rec = manifest.load(model_dir)["subnets"]["11"]["engines"]["int8"]
    assert rec["calibration"]["batches"] == 2 and rec["source"]["key"] == "onnx"
    (name, fed), = inst.trt._double.calibrations  # type: ignore[attr-defined]
    expect = list(CalibrationSet.open(tmp_path / "calib", Preprocess.from_manifest(manifest.load(model_dir)["input"]),
                                      8).batches())
    assert name == "input" and len(fed) == 2
    for got, want in zip(fed, expect, strict=True):
        np.testing.assert_array_equal(got, want)
    (model_dir / rec["path"]).unlink()
    again = build_directory(model_dir, subnets="11", precision="int8", max_batch=8)
    assert again[0]["status"] == "built" and again[0]["reason"] == "engine file missing"
    assert manifest.load(model_dir)["subnets"]["11"]["engines"]["int8"]["calibration"]["batches"] == 0


def test_int8_on_tensorrt_11_needs_a_qdq_graph(monkeypatch: pytest.MonkeyPatch, model_dir: Path,
                                               tmp_path: Path) -> None:
    fake.install(monkeypatch, "11.1")
    write_pngs(tmp_path / "calib", 8, size=(12, 10))
    with pytest.raises(AdnError, match="no 'onnx_int8' graph"):
        build_directory(model_dir, subnets="11", precision="int8", calib=tmp_path / "calib")


# --------------------------------------------------------------------------- running


def _ort(d: Path, code: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return np.asarray(ort.InferenceSession(str(d / f"tiny_{code}.onnx"), providers=["CPUExecutionProvider"])
                      .run(None, {"input": x})[0])


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_engines_run_on_every_version_at_low_nvtx_verbosity(trt: fake.Installed, model_dir: Path,
                                                            cuda_graphs: bool) -> None:
    """Defect 3: engines are built DETAILED (for the inspector) and contexts inherit it;
    DETAILED NVTX ranges add latency to every execute_async_v3. Every context, the ones
    captured into CUDA graphs too, must run below it."""
    from adn_edge.backends.tensorrt.runner import TensorRTBackend

    build_directory(model_dir, precision="fp32", max_batch=4)
    assert engine_header(model_dir, "11", "fp32")["profiling_verbosity"] == "DETAILED"
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8), dtype=np.float32)
    backend = TensorRTBackend(model_dir, manifest.load(model_dir), ["11", "01"], precision="fp32",
                              cuda_graphs=cuda_graphs, graph_batch=1)
    try:
        for code in ("11", "01", "11"):
            for n in (1, 4, 1):
                np.testing.assert_allclose(backend.run(code, x[:n]), _ort(model_dir, code, x[:n]), rtol=1e-5,
                                           atol=1e-6)
        assert backend.describe()["cuda_graphs"] == ({"11": [1], "01": [1]} if cuda_graphs else {})
    finally:
        backend.close()
    stats = trt.gpu.stats
    assert stats["executions"] >= 9 and stats["launches"] == (6 if cuda_graphs else 0)  # the batch-1 runs
    assert stats["detailed_nvtx_enqueues"] == 0


def test_an_engine_from_another_orin_module_is_refused(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    """Defect 6: every Orin module is "Orin (nvgpu)" at sm 8.7. An engine built (and tuned)
    on a 16-SM AGX Orin passed the identity check on an 8-SM Orin Nano, and TensorRT itself
    loads it with a warning at most. SM count and memory tell them apart."""
    from adn_edge.backends.tensorrt.runner import TensorRTBackend

    fake.install(monkeypatch, "10.3", spec=fake.AGX_ORIN_64GB)
    build_directory(model_dir, subnets="11", precision="fp16")
    plan = (model_dir / "tiny_11.fp16.engine").read_bytes()
    nano = fake.install(monkeypatch, "10.3")  # same TensorRT, an Orin Nano
    t = nano.trt
    assert t.Runtime(t.Logger(t.Logger.WARNING)).deserialize_cuda_engine(plan) is not None  # TensorRT would load it
    assert any("across different models of devices" in msg for _, msg in nano.log)
    with pytest.raises(AdnError, match="built for Orin \\(nvgpu\\) with 16 SMs, but this machine's Orin \\(nvgpu\\) "
                                       "has 8") as e:
        TensorRTBackend(model_dir, manifest.load(model_dir), ["11"], precision="fp16")
    assert "adn-edge build" in (e.value.hint or "")
    again = build_directory(model_dir, subnets="11", precision="fp16")
    assert again[0]["status"] == "built" and "16 SMs" in again[0]["reason"]


def test_an_engine_of_another_version_is_refused_before_tensorrt_sees_it(monkeypatch: pytest.MonkeyPatch,
                                                                        model_dir: Path, tmp_path: Path) -> None:
    from adn_edge.backends.tensorrt.runner import TensorRTBackend

    fake.install(monkeypatch, "10.3")
    build_directory(model_dir, subnets="11", precision="fp16")
    newer = fake.install(monkeypatch, "10.16")
    with pytest.raises(AdnError, match="built with TensorRT 10.3.0, but this machine has TensorRT 10.16.2.10"):
        TensorRTBackend(model_dir, manifest.load(model_dir), ["11"], precision="fp16")
    t = newer.trt  # and TensorRT would have refused it with a log line only
    assert t.Runtime(t.Logger(t.Logger.WARNING)).deserialize_cuda_engine(
        (model_dir / "tiny_11.fp16.engine").read_bytes()) is None
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert build_directory(copy, subnets="11", precision="fp16")[0]["reason"] == "TensorRT 10.3.0 -> 10.16.2.10"
