"""Real TensorRT on a real GPU: build, compare with ONNX Runtime, switch among engines.

Skipped (with the reason) wherever TensorRT, a CUDA binding or a GPU is missing,
which is every CI machine; run on a Jetson or a GPU workstation with
``python -m pytest tests/backends/tensorrt -m tensorrt``. Tolerances (relative to the largest
reference logit): FP32 <= 1e-3, FP16 <= 1e-2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _buildkit import make_model_dir

from adn_edge.backends.tensorrt.env import unavailable_reason

REASON = unavailable_reason()
pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(REASON is not None, reason=f"needs TensorRT and a CUDA GPU: {REASON}"),
]
SIZE, WIDTH, CODES = 32, 64, ("11", "01")


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["logits"], {"input": x})[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adn_edge.backends.tensorrt.build import build_directory

    d = make_model_dir(tmp_path_factory.mktemp("trt"), CODES, size=SIZE, width=WIDTH, fp16_files=True)
    for precision in ("fp32", "fp16"):
        results = build_directory(d, precision=precision, max_batch=4)
        assert all(r["status"] == "built" for r in results), results
    return d


def open_backend(d: Path, precision: str, **options: object):  # type: ignore[no-untyped-def]
    from adn_edge.modeldir import manifest
    from adn_edge.backends.tensorrt.runner import TensorRTBackend

    return TensorRTBackend(d, manifest.load(d), list(CODES), precision=precision, **options)


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_engines_match_onnxruntime(built: Path, precision: str, tol: float) -> None:
    rng = np.random.default_rng(0)
    backend = open_backend(built, precision)
    try:
        for n in (1, 3, 4):
            x = rng.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)
            for code in CODES:
                ref = ort_logits(built / f"tiny_{code}.onnx", x)
                got = backend.run(code, x)
                assert got.shape == ref.shape and got.dtype == np.float32
                assert rel_err(got, ref) <= tol, (precision, code, n, rel_err(got, ref))
    finally:
        backend.close()


def test_manifest_records_the_build(built: Path) -> None:
    data = json.loads((built / "manifest.json").read_text())
    for code in CODES:
        engines = data["subnets"][code]["engines"]
        assert set(engines) == {"fp32", "fp16"}
        assert engines["fp16"]["precision_observed"]["by_precision"].get("FP16", 0) > 0
        assert engines["fp16"]["tensorrt_version"] and engines["fp16"]["compute_capability"]
        assert engines["fp16"]["sm_count"] > 0 and engines["fp16"]["gpu_memory_mib"] > 0
        assert engines["fp32"]["options"]["tf32"] is False
    cache = data["subnets"][CODES[0]]["engines"]["fp16"]["timing_cache"]
    assert cache.startswith("tiny.trt") and (built / cache).stat().st_size > 0


def test_contexts_run_below_detailed_nvtx(built: Path) -> None:
    """Engines are built DETAILED (for the inspector); the contexts must not inherit it."""
    import tensorrt as trt

    backend = open_backend(built, "fp16", cuda_graphs=True, graph_batch=1)
    try:
        contexts = [s.context for s in backend._slots.values()]
        contexts += [c for s in backend._slots.values() for c in s.graph_contexts.values()]
        assert contexts and all(c.nvtx_verbosity == trt.ProfilingVerbosity.LAYER_NAMES_ONLY for c in contexts)
    finally:
        backend.close()


def test_switching_shares_one_activation_buffer(built: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    refs = {c: ort_logits(built / f"tiny_{c}.onnx", x) for c in CODES}
    backend = open_backend(built, "fp32")
    try:
        for code in ["11", "01", "01", "11", "01"]:
            assert rel_err(backend.run(code, x), refs[code]) <= 1e-3
        d = backend.describe()
        assert d["activation_bytes"] <= d["activation_bytes_unshared"]
        assert d["max_batch"] == 4
    finally:
        backend.close()
    backend.close()  # idempotent


def test_cuda_graphs(built: Path) -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    backend = open_backend(built, "fp32", cuda_graphs=True, graph_batch=2)
    try:
        for code in CODES:
            ref = ort_logits(built / f"tiny_{code}.onnx", x)
            assert rel_err(backend.run(code, x), ref) <= 1e-3  # graph launch
            assert rel_err(backend.run(code, x[:1]), ref[:1]) <= 1e-3  # other batch: plain enqueue
    finally:
        backend.close()


def test_rebuild_skips_up_to_date(built: Path) -> None:
    from adn_edge.backends.tensorrt.build import build_directory

    assert {r["status"] for r in build_directory(built, precision="fp16", max_batch=4)} == {"skipped"}


def test_batch_beyond_the_profile_is_refused(built: Path) -> None:
    from adn_edge.errors import AdnError

    backend = open_backend(built, "fp32")
    try:
        with pytest.raises(AdnError, match="--max-batch"):
            backend.run("11", np.zeros((5, 3, SIZE, SIZE), np.float32))
    finally:
        backend.close()


def test_engine_from_another_tensorrt_is_refused(built: Path, tmp_path: Path) -> None:
    from adn_edge.modeldir import manifest
    from adn_edge.errors import AdnError

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    data = manifest.load(copy)
    data["subnets"]["11"]["engines"]["fp32"]["tensorrt_version"] = "9.9.9"
    manifest.save(copy, data)
    with pytest.raises(AdnError, match="TensorRT 9.9.9"):
        open_backend(copy, "fp32")


# ------------------------------------------------------------------ segmented mode


@pytest.fixture(scope="module")
def segmented_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet_tiny (4 stages) with all 16 monolithic graphs and the 8 segment graphs,
    every one built into an fp32 and an fp16 engine."""
    torch = pytest.importorskip("torch", reason="exporting the model needs torch")
    from adn_edge.backends.tensorrt.build import build_directory
    from adn_edge.export import export
    from adn_edge.export.segments import export_segments
    from adn_edge.models import create_model
    from adn_edge.models.random_weights import randomize

    torch.manual_seed(0)
    model = randomize(create_model("resnet_tiny"), input_size=32).eval()
    d = tmp_path_factory.mktemp("seg") / "resnet_tiny"
    export(model, d, "all")
    export_segments(model, d)
    for precision in ("fp32", "fp16"):
        build_directory(d, precision=precision, max_batch=4)
        build_directory(d, precision=precision, max_batch=4, segments=True)
    return d


@pytest.mark.parametrize("precision,tol,graphs", [("fp32", 1e-3, False), ("fp16", 1e-2, False),
                                                  ("fp16", 1e-2, True)])
def test_segmented_engines_match_onnxruntime(segmented_dir: Path, precision: str, tol: float, graphs: bool) -> None:
    from adn_edge import subnet
    from adn_edge.runtime import EngineSwitcher

    rng = np.random.default_rng(5)
    with EngineSwitcher.open(segmented_dir, backend="tensorrt", segmented=True, precision=precision,
                             cuda_graphs=graphs, graph_batch=1) as sw:
        assert sw.describe()["engine"]["segments"] == 8
        for n in (1, 3):
            x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
            for code in subnet.all_codes(4):
                ref = ort_logits(segmented_dir / f"resnet_tiny_{code}.onnx", x)
                assert rel_err(sw.infer(x, code), ref) <= tol, (precision, code, n)


def test_segment_engines_hold_fewer_weights(segmented_dir: Path) -> None:
    from adn_edge.modeldir import manifest

    data = manifest.load(segmented_dir)
    mono = sum(e["fp16"]["bytes"] for e in (s["engines"] for s in data["subnets"].values()))
    seg = sum(part["engines"][kind]["fp16"]["bytes"] for part in data["segments"]["parts"]
              for kind in ("full", "skip"))
    assert seg < mono / 2, (seg, mono)


def test_int8_segments_calibrate_on_feature_maps(segmented_dir: Path, tmp_path: Path) -> None:
    """TensorRT's calibrator accepts the feature-map batches of segments 1..S-1 and the
    chained INT8 engines stay close to float32 (random weights and images: loose bound)."""
    from _buildkit import write_pngs

    from adn_edge import subnet
    from adn_edge.backends.tensorrt.build import build_directory
    from adn_edge.runtime import EngineSwitcher

    images = tmp_path / "calib"
    write_pngs(images, 32, size=(40, 36))
    results = build_directory(segmented_dir, precision="int8", calib=images, max_batch=4, segments=True)
    assert all(r["status"] == "built" for r in results), results
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with EngineSwitcher.open(segmented_dir, backend="tensorrt", segmented=True, precision="int8") as sw:
        for code in subnet.all_codes(4):
            ref = ort_logits(segmented_dir / f"resnet_tiny_{code}.onnx", x)
            assert rel_err(sw.infer(x, code), ref) <= 0.25, code
