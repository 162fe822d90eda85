"""The CUDA layer (``adn_edge.backends.cuda``) on the doubles of cuda-python, pycuda and
libcuda (``tests/runtime/_fake_cuda.py``): binding selection and its messages, the pin
per platform, context hygiene, and the double's own fidelity (asynchronous copies, CUDA
graphs frozen at capture), which the runtime tests rely on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import adn_edge.backends.cuda as cl
from adn_edge.backends.cuda import CudaStartError, cuda_python_pin, open_cuda
from adn_edge.errors import AdnError
from tests.runtime import _fake_cuda as fc
from tests.runtime import _fake_tensorrt as fake

REPO = Path(__file__).resolve().parents[3]
JETSON = REPO / "tests" / "fixtures" / "jetson"


def _jetson(monkeypatch: pytest.MonkeyPatch, folder: str, cuda: str | None) -> None:
    """Make this machine read as the recorded Jetson ``folder`` with CUDA toolkit ``cuda``."""
    from adn_edge.platform import jetson, system

    text = (JETSON / folder / "nv_tegra_release.txt").read_text()
    rel = jetson.parse_nv_tegra_release(text)
    assert rel is not None
    monkeypatch.setattr(system, "jetson_release",
                        lambda *a, **k: system.JetsonRelease(rel.version, "/etc/nv_tegra_release", rel.release))
    monkeypatch.setattr(system, "cuda_toolkit_version", lambda *a, **k: (cuda, "test"))


# --------------------------------------------------------------------------- defect 2


def test_auto_falls_back_to_pycuda_when_cuda_python_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2: a cuda-python wheel newer than the JetPack CUDA imports, then fails with
    cudaErrorInsufficientDriver (35). ``auto`` took it and stopped there ("no CUDA GPU is
    visible"); it must fall back to pycuda."""
    gpu = fc.FakeGpu()
    fc.install_pycuda(monkeypatch, gpu, cuda_python_too=True)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fc.cudart_module(fc.FakeGpu(start_error=35)))
    api = open_cuda("auto")
    try:
        assert api.name == "pycuda" and api.device_info().sm_count == 8
    finally:
        api.close()


def test_a_binding_that_cannot_start_names_the_cuda_error_and_the_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2: the message names CUDA's error and the pin for this JetPack, instead of
    "no CUDA GPU is visible", which sent users to check a GPU that was fine."""
    fc.install_cuda_python(monkeypatch, fc.FakeGpu(start_error=35))
    _jetson(monkeypatch, "orin_nano_devkit_jp6.2.1_r36.4.4", "12.6.68")
    with pytest.raises(CudaStartError) as e:
        open_cuda("auto")
    assert "cudaErrorInsufficientDriver (35): CUDA driver version is insufficient" in e.value.message
    assert "no CUDA GPU is visible" not in e.value.message and "pycuda not installed" in e.value.message
    assert "cuda-python==12.6.*" in (e.value.hint or "") and e.value.error_name == "cudaErrorInsufficientDriver"
    assert e.value.exit_code == 2
    # JetPack 7.2 runs CUDA 13.2: the pin follows
    _jetson(monkeypatch, "orin_nano_super_devkit_jp7.2.1_r39.2.1", None)
    with pytest.raises(CudaStartError) as e:
        open_cuda("cuda-python")
    assert "cuda-python==13.2.*" in (e.value.hint or "")


def test_no_device_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    fc.install_cuda_python(monkeypatch, fc.FakeGpu(start_error=100))
    with pytest.raises(CudaStartError, match="cudaErrorNoDevice") as e:
        open_cuda("cuda-python")
    assert "CUDA_VISIBLE_DEVICES" in (e.value.hint or "")
    fc.install_pycuda(monkeypatch, fc.FakeGpu(start_error=35))
    with pytest.raises(CudaStartError, match="pycuda cannot start CUDA") as e:
        open_cuda("pycuda")
    assert e.value.error_name == "cudaErrorInsufficientDriver"


def test_pins_cover_both_cuda_generations() -> None:
    """Defect 2: JetPack 7.2 and the tensorrt-cu13 wheels need CUDA 13, yet every hint and
    the extras said cuda-python>=12,<13."""
    assert cuda_python_pin("12.6.68", jetson=True) == "cuda-python==12.6.*"
    assert cuda_python_pin("12.2.140", jetson=True) == "cuda-python==12.2.*"
    assert cuda_python_pin("13.2.86", jetson=True) == "cuda-python==13.2.*"
    assert cuda_python_pin("12.4", jetson=False) == "cuda-python>=12,<13"
    assert cuda_python_pin("13.0", jetson=False) == "cuda-python>=13,<14"
    assert "match" in cuda_python_pin(None, jetson=False, probe=False)
    for pin in ("cuda-python==12.6.*", "cuda-python==13.2.*", "cuda-python>=12,<13", "cuda-python>=13,<14"):
        assert pin in cl.CUDA_INSTALL_HINT
    from adn_edge.backends.tensorrt.env import INSTALL_HINT

    for text in ("cuda-python==13.2.*", "tensorrt-cu13 'cuda-python>=13,<14'", "tensorrt-cu12 'cuda-python>=12,<13'"):
        assert text in INSTALL_HINT
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "cuda-python>=12,<13" in extras["tensorrt"] and any(r.startswith("tensorrt-cu12") for r in extras["tensorrt"])
    assert "cuda-python>=13,<14" in extras["tensorrt-cu13"]
    assert any(r.startswith("tensorrt-cu13") for r in extras["tensorrt-cu13"])


def test_probe_reports_every_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fc.FakeGpu()
    fc.install_pycuda(monkeypatch, gpu, cuda_python_too=True)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fc.cudart_module(fc.FakeGpu(start_error=35)))
    reports = {r.name: r for r in cl.probe_bindings()}
    assert not reports["cuda-python"].started and reports["cuda-python"].error_name == "cudaErrorInsufficientDriver"
    assert reports["pycuda"].started and reports["pycuda"].device is not None
    assert reports["pycuda"].as_record()["device"] == {"name": "Orin (nvgpu)", "compute_capability": "8.7",
                                                       "sm_count": 8, "memory_mib": 7619}
    assert gpu.driver_stack() == [] and gpu.primary_refcount == 0


def test_an_unknown_device_index_is_input_not_a_start_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    fc.install_cuda_python(monkeypatch, fc.FakeGpu())
    with pytest.raises(AdnError, match="CUDA device 3 does not exist") as e:
        open_cuda("auto", device=3)
    assert not isinstance(e.value, CudaStartError)


# --------------------------------------------------------------------------- defect 7


def test_gpu_info_through_pycuda_leaves_no_context_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: pycuda's detach() of a primary context pushes it and releases it without
    popping it (pycuda's cuda.hpp; cuDevicePrimaryCtxRelease never pops), so asking what the
    GPU is left the context current on the thread. It needs no context at all."""
    from adn_edge.backends.tensorrt.env import gpu_info

    gpu = fc.FakeGpu()
    fc.install_pycuda(monkeypatch, gpu)
    info = gpu_info(cuda="pycuda")
    assert (info.name, info.sm_count) == ("Orin (nvgpu)", 8)
    assert gpu.driver_stack() == [] and gpu.primary_refcount == 0


def test_closing_pycuda_after_use_pops_the_primary_context(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fc.FakeGpu()
    fc.install_pycuda(monkeypatch, gpu)
    api = open_cuda("pycuda")
    buf = api.alloc(64)
    stream = api.create_stream()
    with api.activate():
        assert gpu.driver_stack() == [gpu.primary_handle]
    assert gpu.driver_stack() == []
    api.free(buf)
    api.destroy_stream(stream)
    api.close()
    assert gpu.driver_stack() == [] and gpu.primary_refcount == 0
    with pytest.raises(cl.CudaError, match="closed"):
        api.alloc(4)


# --------------------------------------------------------------------------- the double's fidelity


@pytest.fixture(params=["cuda-python", "pycuda"])
def api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    gpu = fc.FakeGpu()
    if request.param == "cuda-python":
        fc.install_cuda_python(monkeypatch, gpu)
    else:
        fc.install_pycuda(monkeypatch, gpu)
    a = open_cuda(request.param)
    a.gpu = gpu  # type: ignore[attr-defined]
    yield a
    a.close()


def test_copies_complete_at_synchronize(api) -> None:  # type: ignore[no-untyped-def]
    """A device-to-host copy writes its destination when it runs: without synchronising,
    the host reads stale data; a host-to-device copy reads its source when it runs."""
    with api.activate():
        host = api.alloc_pinned((4,), np.dtype(np.float32))
        out = api.alloc_pinned((4,), np.dtype(np.float32))
        dev = api.alloc(16)
        stream = api.create_stream()
        host.array[...] = [1, 2, 3, 4]
        api.copy_htod_async(dev, host.array, stream)
        host.array[...] = [5, 6, 7, 8]  # overwritten before the copy ran: the copy sees this
        api.copy_dtoh_async(out.array, dev, stream)
        np.testing.assert_array_equal(out.array, [0, 0, 0, 0])  # stale: nothing has run yet
        api.synchronize(stream)
        np.testing.assert_array_equal(out.array, [5, 6, 7, 8])
        api.free(dev)
        with pytest.raises(fc.FakeFault, match="never allocated"):
            api.copy_htod_async(dev.__class__(dev.ptr or 0x1, 16), host.array, stream)


def test_graphs_replay_what_was_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A captured TensorRT enqueue replays with the addresses and shapes it had at capture;
    rebinding a captured context is an error; capturing a context's first enqueue (no
    warm-up) invalidates the capture, as TensorRT's lazy allocations do on a GPU."""
    from _buildkit import tiny_onnx

    inst = fake.install(monkeypatch, "10.3")
    t, gpu = inst.trt, inst.gpu
    logger = t.Logger(t.Logger.WARNING)
    builder = t.Builder(logger)
    net = builder.create_network(0)
    assert t.OnnxParser(net, logger).parse(tiny_onnx(0), None)
    config = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    prof.set_shape("input", (1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8))
    config.add_optimization_profile(prof)
    engine = t.Runtime(logger).deserialize_cuda_engine(bytes(builder.build_serialized_network(net, config)))
    api = open_cuda("cuda-python")
    stream = api.create_stream()
    x_ptr, y_ptr, y2_ptr = api.alloc(2 * 3 * 64 * 4), api.alloc(2 * 5 * 4), api.alloc(2 * 5 * 4)
    ctx = engine.create_execution_context(t.ExecutionContextAllocationStrategy.USER_MANAGED)
    ctx.set_device_memory(api.alloc(engine.device_memory_size_v2).ptr, engine.device_memory_size_v2)
    assert ctx.set_input_shape("input", (1, 3, 8, 8))
    assert ctx.set_tensor_address("input", x_ptr.ptr) and ctx.set_tensor_address("logits", y_ptr.ptr)

    api.begin_capture(stream)  # no warm-up run yet
    assert ctx.execute_async_v3(stream.handle) is False
    with pytest.raises(cl.CaptureFailed):
        api.end_capture(stream)

    assert ctx.execute_async_v3(stream.handle)  # the warm-up
    api.synchronize(stream)
    api.begin_capture(stream)
    assert ctx.execute_async_v3(stream.handle)
    with pytest.raises(cl.CudaError, match="cudaErrorStreamCaptureUnsupported"):
        api.synchronize(stream)  # synchronising inside a capture: not allowed, and the capture is lost
    with pytest.raises(cl.CaptureFailed):
        api.end_capture(stream)

    api.begin_capture(stream)
    assert ctx.execute_async_v3(stream.handle)
    graph = api.end_capture(stream)
    with pytest.raises(fake.FakeFault, match="captured in a live CUDA graph"):
        ctx.set_tensor_address("logits", y2_ptr.ptr)
    with pytest.raises(fake.FakeFault, match="captured in a live CUDA graph"):
        ctx.set_input_shape("input", (2, 3, 8, 8))
    before = gpu.stats["executions"]
    api.launch(graph, stream)
    api.synchronize(stream)
    assert gpu.stats["executions"] == before + 1
    assert np.abs(gpu.floats(y_ptr.ptr, 5)).sum() > 0 and np.abs(gpu.floats(y2_ptr.ptr, 5)).sum() == 0
    api.destroy_graph(graph)
    assert ctx.set_tensor_address("logits", y2_ptr.ptr)  # free again once the graph is gone
    api.close()
