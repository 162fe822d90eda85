"""Segment engines: ``build_directory(segments=True)`` and the chained TensorRT backend.

The model directory is real (``resnet_tiny``: 16 monolithic graphs and 8 segment
graphs, exported from PyTorch), and so is every line of adn-edge's TensorRT code: the
builder (``builder.py``) builds through the version-faithful TensorRT double of
``_fake_tensorrt`` and the runner runs through it, over the real CUDA layer
(``CudaPython``/``PyCuda``) on the CUDA double of ``_fake_cuda``. An "engine" there is
the ONNX graph run by ONNX Runtime, device memory is host memory. So these tests check
everything except TensorRT and the GPU themselves: the build plan and manifest records,
which engine runs for which code, the buffer hand-over between segments, batch handling,
CUDA-graph capture, the refusals on open; the equality with the PyTorch ADN forward
(relative error <= 1e-4) runs on TensorRT 10.3, 10.16 and 11.1.
``tests/backends/tensorrt/test_build_tensorrt_gpu.py`` runs the real thing where TensorRT is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from adn_edge.modeldir import manifest
from adn_edge.backends.tensorrt.build import build_directory
from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher
from adn_edge.backends.tensorrt.chain import monolithic_layout, segmented_layout
from tests.runtime import _fake_tensorrt as fake
from tests.runtime._helpers import ARCH, CODES, TOL, rel_err

MAX_BATCH = 4
PRECISION = {"10.3": "fp16", "10.16": "fp16", "11.1": "fp32"}
"""Segments build in fp16 on TensorRT 10 (builder flag); on 11.x fp16 needs the float16
segment graphs (`export --segments --fp16`), which this directory does not have."""


@pytest.fixture(scope="module")
def builds(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """A model directory per TensorRT version (built on first use): the 8 segment engines
    and monolithic engines for two sub-networks, built by the real builder through that
    version's double."""
    done: dict[str, Path] = {}

    def get(tag: str) -> Path:
        if tag in done:
            return done[tag]
        d = tmp_path_factory.mktemp(f"trt{tag}") / ARCH
        shutil.copytree(model_dir, d)
        mp = pytest.MonkeyPatch()
        try:
            inst = fake.install(mp, tag)
            p = PRECISION[tag]
            results = build_directory(d, precision=p, max_batch=MAX_BATCH, segments=True)
            assert [r["code"] for r in results] == [f"seg{k}_{kind}" for k in range(4) for kind in ("full", "skip")]
            assert all(r["status"] == "built" and r["observed"] == p for r in results), results
            # every segment is built for its own input: an image for part 0, feature maps after
            m = manifest.load(d)
            for k, part in enumerate(m["segments"]["parts"]):
                for kind in ("full", "skip"):
                    header = fake.plan_header((d / part["engines"][kind][p]["path"]).read_bytes())
                    assert header["profiles"][part["input"]][2] == [MAX_BATCH, *part["input_shape"][1:]]
                    assert header["trt"] == inst.version
            build_directory(d, subnets=["1111", "0000"], precision=p, max_batch=MAX_BATCH)
        finally:
            mp.undo()
        done[tag] = d
        return d

    yield get


@pytest.fixture(scope="module")
def built(builds: Callable[[str], Path]) -> Path:
    """TensorRT 10.3 (JetPack 6): what most tests use."""
    return builds("10.3")


@pytest.fixture()
def gpu(monkeypatch: pytest.MonkeyPatch) -> fake.Installed:
    return fake.install(monkeypatch, "10.3")


def _activation(d: Path, precision: str = "fp16") -> tuple[int, int]:
    """(shared, unshared) activation bytes of the 8 segment engines, from their plans."""
    m = manifest.load(d)
    sizes = [fake.plan_header((d / part["engines"][kind][precision]["path"]).read_bytes())["device_memory"]
             for part in m["segments"]["parts"] for kind in ("full", "skip")]
    return max(sizes), sum(sizes)


def test_segment_engines_are_recorded_beside_their_graphs(built: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    m = manifest.load(built)
    for k, part in enumerate(m["segments"]["parts"]):
        for kind in ("full", "skip"):
            rec = part["engines"][kind]["fp16"]
            assert rec["path"] == f"{ARCH}_seg{k}_{kind}.fp16.engine"
            assert (built / rec["path"]).is_file()
            assert rec["source"]["sha256"] == part["files"][kind]["sha256"]
            assert (rec["tensorrt_version"], rec["gpu"], rec["sm_count"]) == ("10.3.0", "Orin (nvgpu)", 8)
    fake.install(monkeypatch, "10.3")
    d = tmp_path / ARCH
    shutil.copytree(built, d)
    again = build_directory(d, precision="fp16", max_batch=MAX_BATCH, segments=True)
    assert {r["status"] for r in again} == {"skipped"}
    changed = build_directory(d, precision="fp16", max_batch=2, segments=True)
    assert {r["reason"] for r in changed} == {"options changed (max_batch 4 -> 2)"}


def test_segment_builds_refuse_what_they_cannot_do(built: Path, model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake.install(monkeypatch, "10.3")
    with pytest.raises(AdnError, match="segment 0 \\(full\\) needs INT8 scales from calibration images") as e:
        build_directory(built, precision="int8", segments=True)
    assert "--calib" in (e.value.hint or "")
    with pytest.raises(AdnError, match="--subnet does not apply"):
        build_directory(built, subnets=["1010"], segments=True)
    fake.install(monkeypatch, "11.1")
    with pytest.raises(AdnError, match="TensorRT 11.x has no calibrator"):
        build_directory(built, precision="int8", segments=True)
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    m = manifest.load(bare)
    del m["segments"]
    manifest.save(bare, m)
    with pytest.raises(AdnError, match="no segment graphs") as e:
        build_directory(bare, segments=True)
    assert "--segments" in (e.value.hint or "")


def test_layouts_chain_through_two_buffers(built: Path) -> None:
    m = manifest.load(built)
    seg = segmented_layout(m, CODES, None)
    assert seg.precision == "fp16" and len(seg.links) == 8
    assert seg.programs["1010"] == ("seg0_full", "seg1_skip", "seg2_full", "seg3_skip")
    chain = [seg.links[k] for k in seg.programs["0110"]]
    assert [(link.source, link.target) for link in chain] == [("input", "a"), ("a", "b"), ("b", "a"),
                                                              ("a", "logits")]
    parts = m["segments"]["parts"]
    sizes = [int(np.prod(p["output_shape"][1:])) for p in parts]
    assert seg.buffer_elements == {"input": 3 * 32 * 32, "a": max(sizes[0], sizes[2]), "b": sizes[1],
                                   "logits": 10}
    assert seg.input_dims == (3, 32, 32) and seg.output_dims == (10,)
    mono = monolithic_layout(m, ["1111", "0000"], "fp16")
    assert mono.programs == {"1111": ("1111",), "0000": ("0000",)}
    assert mono.buffer_elements == {"input": 3 * 32 * 32, "logits": 10}
    with pytest.raises(AdnError, match="No fp32 TensorRT engine for segment 0 \\(full\\)") as e:
        segmented_layout(m, CODES, "fp32")
    assert "--segments --precision fp32" in (e.value.hint or "")


@pytest.mark.parametrize("tag,binding,cuda_graphs", [
    ("10.3", "cuda-python", False), ("10.3", "cuda-python", True), ("10.3", "pycuda", True),
    ("10.16", "cuda-python", True), ("11.1", "cuda-python", False), ("11.1", "pycuda", True),
])
def test_segmented_tensorrt_equals_the_adn_forward(builds: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
                                                   inputs, references, tag: str, binding: str,
                                                   cuda_graphs: bool) -> None:
    """Every sub-network from the 8 segment engines equals the ADN forward, on each
    TensorRT version and both CUDA bindings; CUDA graphs replay whole chains; no enqueue
    runs at the DETAILED NVTX verbosity the engines were built with."""
    d = builds(tag)
    inst = fake.install(monkeypatch, tag, binding)
    shared, unshared = _activation(d, PRECISION[tag])
    with EngineSwitcher.open(d, backend="tensorrt", segmented=True, cuda_graphs=cuda_graphs, graph_batch=2,
                             cuda=binding) as sw:
        e = sw.describe()["engine"]
        assert e["backend"] == "tensorrt-segmented" and e["segments"] == e["engines"] == 8
        assert e["cuda"] == binding and e["tensorrt_version"] == inst.version
        assert e["activation_bytes"] == shared < unshared == e["activation_bytes_unshared"]  # one buffer for 8
        assert len(e["cuda_graphs"]) == (16 if cuda_graphs else 0) and e["notes"] == []
        rng = np.random.default_rng(3)
        for code in rng.permutation(CODES):  # an arbitrary switch order
            sw.switch(str(code))
            for x, ref in zip(inputs, references[str(code)], strict=True):
                assert rel_err(sw.infer(x), ref) <= TOL, (code, x.shape)
    # batch 2 runs as one graph launch per inference (the whole chain); other batches run eagerly
    assert inst.gpu.stats["launches"] == (16 * sum(x.shape[0] == 2 for x in inputs) if cuda_graphs else 0)
    assert inst.gpu.stats["executions"] > 0 and inst.gpu.stats["detailed_nvtx_enqueues"] == 0
    assert inst.gpu.driver_stack() == []  # pycuda: closing left no context current on this thread


def test_monolithic_tensorrt_still_equals_the_adn_forward(built: Path, gpu: fake.Installed, inputs,
                                                          references) -> None:
    with EngineSwitcher.open(built, backend="tensorrt", subnets=["1111", "0000"]) as sw:
        assert sw.describe()["engine"]["engines"] == 2
        for code in ("0000", "1111", "0000"):
            sw.switch(code)
            assert rel_err(sw.infer(inputs[4]), references[code][4]) <= TOL
        with pytest.raises(AdnError, match="outside the 1111 engines' range 1..4") as e:
            sw.infer(np.zeros((5, 3, 32, 32), np.float32), "1111")
        assert "adn-edge build DIR --max-batch 5" in (e.value.hint or "")


def test_batch_outside_the_segment_profiles_names_the_segment_build(built: Path, gpu: fake.Installed) -> None:
    with EngineSwitcher.open(built, backend="tensorrt", segmented=True, subnets=["1010"]) as sw:
        with pytest.raises(AdnError, match="range 1..4") as e:
            sw.infer(np.zeros((MAX_BATCH + 1, 3, 32, 32), np.float32))
        assert "--segments" in (e.value.hint or "")


def test_open_refuses_foreign_or_tampered_segment_engines(built: Path, gpu: fake.Installed,
                                                          tmp_path: Path) -> None:
    d = tmp_path / ARCH
    shutil.copytree(built, d)
    m = manifest.load(d)
    rec = m["segments"]["parts"][2]["engines"]["skip"]["fp16"]
    rec["gpu"] = "NVIDIA H100 80GB HBM3"
    manifest.save(d, m)
    with pytest.raises(AdnError, match="seg2_skip.fp16.engine was built for NVIDIA H100"):
        EngineSwitcher.open(d, backend="tensorrt", segmented=True)
    rec["gpu"] = "Orin (nvgpu)"
    rec["sm_count"] = 16  # an AGX Orin's: same name and compute capability as this Orin Nano
    manifest.save(d, m)
    with pytest.raises(AdnError, match="seg2_skip.fp16.engine was built for Orin \\(nvgpu\\) with 16 SMs, but this "
                                       "machine's Orin \\(nvgpu\\) has 8"):
        EngineSwitcher.open(d, backend="tensorrt", segmented=True)
    rec["sm_count"] = 8
    manifest.save(d, m)
    with open(d / rec["path"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(AdnError, match="seg2_skip.fp16.engine .*does not match the sha256"):
        EngineSwitcher.open(d, backend="tensorrt", segmented=True)


def test_open_before_building_segments_says_how(model_dir: Path, gpu: fake.Installed) -> None:
    with pytest.raises(AdnError, match="No TensorRT engine precision is built") as e:
        EngineSwitcher.open(model_dir, backend="tensorrt", segmented=True)
    assert "adn-edge build DIR --segments" in (e.value.hint or "")


def test_auto_prefers_segmented_tensorrt_where_it_runs(built: Path, gpu: fake.Installed) -> None:
    with EngineSwitcher.open(built, segmented=True, subnets=["0101"]) as sw:
        assert sw.backend_name == "tensorrt-segmented"


def test_info_lists_segments_and_their_engines(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adn_edge.cli.app import main
    from adn_edge.describe import describe

    d = describe(built)
    assert [(s["segment"], s["kind"]) for s in d["segments"]] == [(k, f) for k in range(4) for f in ("full", "skip")]
    assert all(s["engines"] == ["fp16"] and s["files"] == ["onnx"] for s in d["segments"])
    e = describe(built / f"{ARCH}_seg3_skip.fp16.engine")
    assert (e["segment"], e["form"], e["precision"]) == (3, "skip", "fp16")
    with pytest.raises(SystemExit) as exit_:
        main(["info", str(built)])
    assert exit_.value.code in (0, None)
    assert "segments (segmented mode)" in capsys.readouterr().out


def test_build_cli_segments(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from adn_edge.cli.app import main

    d = tmp_path / ARCH
    shutil.copytree(model_dir, d)
    fake.install(monkeypatch, "10.3")

    def run(args: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as e:
            main(args)
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, " ".join(err.split())

    code, out, _ = run(["build", str(d), "--segments", "--json"])
    assert code == 0
    assert [(r["code"], r["status"], r["engine"]) for r in json.loads(out)][:2] == [
        ("seg0_full", "built", f"{ARCH}_seg0_full.fp16.engine"), ("seg0_skip", "built", f"{ARCH}_seg0_skip.fp16.engine")]
    code, _, err = run(["build", str(d), "--segments", "--precision", "int8"])
    assert code == 2 and "needs INT8 scales from calibration images" in err and "Traceback" not in err
    code, _, err = run(["build", str(d), "--segments", "--subnet", "1010"])
    assert code == 2 and "--subnet does not apply" in err


# ------------------------------------------------------------------ INT8 segments


def test_prefix_codes_cycle_through_every_earlier_combination() -> None:
    from adn_edge.backends.tensorrt.segment_calibration import prefix_code

    assert [prefix_code(b, 2) for b in range(5)] == ["11", "10", "01", "00", "11"]
    assert prefix_code(7, 0) == ""
    assert sorted(prefix_code(b, 3) for b in range(8)) == [format(v, "03b") for v in range(8)]


def _png_folder(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(4)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def test_int8_segments_calibrate_on_features_of_every_prefix(model_dir: Path, tmp_path: Path, gpu: fake.Installed,
                                                             inputs, references) -> None:
    import onnxruntime as ort

    d = tmp_path / ARCH
    shutil.copytree(model_dir, d)
    images = _png_folder(tmp_path / "calib", 16)
    results = build_directory(d, precision="int8", calib=images, max_batch=MAX_BATCH, segments=True)
    assert {r["status"] for r in results} == {"built"}
    # what TensorRT's calibrator protocol read from device memory, build by build
    calibrations = gpu.trt._double.calibrations  # type: ignore[attr-defined]
    assert len(calibrations) == 8
    fed = {r["code"]: batches for r, (_, batches) in zip(results, calibrations, strict=True)}
    parts = manifest.load(d)["segments"]["parts"]
    for k, part in enumerate(parts):
        for kind in ("full", "skip"):  # both forms of part k read the same features
            assert [b.shape for b in fed[f"seg{k}_{kind}"]] == [(8, *part["input_shape"][1:])] * 2
            np.testing.assert_array_equal(fed[f"seg{k}_full"][1], fed[f"seg{k}_skip"][1])

    # recomputed independently: batch 1 of segment 3 is the images of batch 1 through
    # segments 0, 1, 2 in the forms of prefix 110 (the prefixes run 111, 110, 101, ...)
    def session(k: int, kind: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(d / f"{ARCH}_seg{k}_{kind}.onnx"), providers=["CPUExecutionProvider"])

    x = fed["seg0_full"][1]
    for k, kind in enumerate(("full", "full", "skip")):
        x = session(k, kind).run(None, {parts[k]["input"]: x})[0]
    np.testing.assert_allclose(fed["seg3_full"][1], x, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fed["seg3_full"][0], fed["seg3_full"][1])

    m = manifest.load(d)
    recs = [m["segments"]["parts"][k]["engines"][kind]["int8"] for k in range(4) for kind in ("full", "skip")]
    assert [r["calibration"]["cache"] for r in recs[:2]] == [f"{ARCH}_seg0_full.trt10.3.0.int8.calib",
                                                            f"{ARCH}_seg0_skip.trt10.3.0.int8.calib"]
    assert (d / recs[0]["calibration"]["cache"]).read_text().startswith("TRT-100300-EntropyCalibration2\n")
    digests = [r["calibration"]["images_sha256"] for r in recs]
    assert len(set(digests[::2])) == 4  # each segment's data is its own (the preceding graphs count)
    # segment 0 calibrates on the images themselves; the later ones say which images they carried
    assert {r["calibration"]["source_images_sha256"] for r in recs[2:]} == {recs[0]["calibration"]["images_sha256"]}
    # the caches stand for the calibration afterwards: no --calib, nothing rebuilt
    again = build_directory(d, precision="int8", max_batch=MAX_BATCH, segments=True)
    assert {r["status"] for r in again} == {"skipped"}

    with EngineSwitcher.open(d, backend="tensorrt", segmented=True, precision="int8", subnets=["1001"]) as sw:
        assert sw.describe()["engine"]["precision"] == "int8"
        assert rel_err(sw.infer(inputs[1]), references["1001"][1]) <= TOL  # the double runs the fp32 graph


# ------------------------------------------------------------------ CUDA faults


def test_a_failed_graph_capture_runs_without_a_graph(built: Path, gpu: fake.Installed, inputs,
                                                     references) -> None:
    """An invalidated capture is not fatal (as in trtexec): the sub-network runs eagerly."""
    gpu.gpu.invalidate_captures = True
    with EngineSwitcher.open(built, backend="tensorrt", segmented=True, subnets=["1100", "0011"],
                             cuda_graphs=True, graph_batch=2) as sw:
        d = sw.describe()["engine"]
        assert d["cuda_graphs"] == {} and len(d["notes"]) == 2 and "capture failed" in d["notes"][0]
        assert rel_err(sw.infer(inputs[1], "0011"), references["0011"][1]) <= TOL


def test_close_after_a_cuda_fault_releases_everything(built: Path, gpu: fake.Installed,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """After a sticky fault (an illegal address) every CUDA call fails, as on a GPU: close
    still attempts every release, in order, logs the faults and raises none of them."""
    sw = EngineSwitcher.open(built, backend="tensorrt", segmented=True, subnets=["1010"])
    attempts = gpu.gpu.stats["free_attempts"]
    gpu.gpu.sticky_error = 700
    with pytest.raises(Exception, match="cudaErrorIllegalAddress \\(700\\): an illegal memory access"):
        sw.infer(np.zeros((1, 3, 32, 32), np.float32))
    sw.close()  # no exception: the faults are logged
    assert "illegal memory access" in caplog.text
    # the activation buffer and the four I/O buffers (input, a, b, logits): each free attempted
    assert gpu.gpu.stats["free_attempts"] - attempts == 5
    sw.close()  # idempotent


def test_the_gpu_benchmark_script_runs_through(tmp_path: Path, gpu: fake.Installed,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/bench_tensorrt_segments.py end to end on the test double (a small arch,
    a temporary output): its first real run is on a GPU someone waited for, so its
    plumbing is checked here. The numbers it prints here are the double's: meaningless."""
    import importlib.util
    import json
    import sys

    bench_dir = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("bench_tensorrt_segments", bench_dir / "bench_tensorrt_segments.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_tensorrt_segments", script)
    spec.loader.exec_module(script)
    out = tmp_path / "result.json"
    assert script.main(["--arch", ARCH, "--iterations", "4", "--rounds", "2", "--workdir", str(tmp_path / "w"),
                        "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["engines"]["monolithic_files"] == 16 and rec["engines"]["segmented_files"] == 8
    assert set(rec["latency"]) == {"plain", "cuda_graphs"} and len(rec["latency"]["plain"]) == 16
    assert rec["gpu"] == "Orin (nvgpu)" and rec["builds"]["segmented"]["built"] == 8
