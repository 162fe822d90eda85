"""The TensorRT runtime pieces import and explain themselves on a machine without
TensorRT, CUDA bindings or torch (a robot, or CI)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import adn_edge.backends.cuda as cl
from adn_edge.backends.cuda import cuda_python
from adn_edge.errors import AdnError

REPO = Path(__file__).resolve().parents[3]

BLOCKER = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "tensorrt", "pycuda", "cuda"}:
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
""")


def test_runtime_modules_import_without_torch_or_tensorrt() -> None:
    code = BLOCKER + textwrap.dedent("""
        import adn_edge.backends.tensorrt.runner as tb
        import adn_edge.backends.cuda as cl
        import adn_edge.backends.tensorrt.build
        from adn_edge.runtime.backend import backend_specs
        spec = backend_specs()["tensorrt"]
        assert spec.priority == 30 and spec.factory is tb.TensorRTBackend
        reason = spec.available()
        assert reason and "TensorRT is not installed" in reason, reason
        assert cl.available_bindings() == []
        bad = [m for m in sys.modules if m.split(".")[0] in {"torch", "tensorrt", "pycuda", "cuda"}]
        assert not bad, bad
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_backend_without_tensorrt_raises_adn_error(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adn_edge.modeldir import manifest
    from adn_edge.backends.tensorrt.runner import TensorRTBackend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(AdnError, match="TensorRT is not installed") as e:
        TensorRTBackend(model_dir, manifest.load(model_dir), ["11"])
    assert "python3-libnvinfer" in (e.value.hint or "")


def test_cuda_layer_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AdnError, match="Unknown CUDA binding"):
        cl.open_cuda("opencl")
    monkeypatch.setattr(cl, "available_bindings", lambda: [])
    with pytest.raises(AdnError, match="cuda-python or pycuda") as e:
        cl.open_cuda("auto")
    assert "cuda-python>=12,<13" in (e.value.hint or "") and "pycuda" in (e.value.hint or "")
    with pytest.raises(AdnError, match="needs pycuda"):
        cl.open_cuda("pycuda")

    opened: list[str] = []

    class FakeApi:
        def __init__(self, device: int = 0) -> None:
            opened.append(type(self).__name__)

    class CudaPython(FakeApi):
        pass

    class PyCuda(FakeApi):
        pass

    monkeypatch.setattr("adn_edge.backends.cuda.cuda_python.CudaPython", CudaPython)
    monkeypatch.setattr("adn_edge.backends.cuda.pycuda_driver.PyCuda", PyCuda)
    monkeypatch.setattr(cl, "available_bindings", lambda: ["cuda-python", "pycuda"])
    cl.open_cuda("auto")
    cl.open_cuda("pycuda")
    monkeypatch.setattr(cl, "available_bindings", lambda: ["pycuda"])
    cl.open_cuda("auto")
    assert opened == ["CudaPython", "PyCuda", "PyCuda"]


def test_cuda_python_layer_on_a_fake_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """CudaPython over the cuda-python double (``(cudaError_t, value)`` tuples): pinned
    arrays, copies that complete at synchronize, errors named by CUDA."""
    from tests.runtime._fake_cuda import FakeGpu, install_cuda_python

    gpu = FakeGpu()
    install_cuda_python(monkeypatch, gpu)
    api = cuda_python.CudaPython(0)
    info = api.device_info()
    assert (info.name, info.compute_capability, info.sm_count, info.memory_mib) == ("Orin (nvgpu)", "8.7", 8, 7619)
    host = api.alloc_pinned((2, 3), np.dtype(np.float32))
    assert host.array.shape == (2, 3) and host.array.dtype == np.float32
    host.array[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = api.alloc(host.array.nbytes)
    stream = api.create_stream()
    with api.activate():
        api.copy_htod_async(dev, host.array[:1], stream)  # first row only: 12 bytes
        back = api.alloc_pinned((1, 3), np.dtype(np.float32))
        api.copy_dtoh_async(back.array, dev, stream)
        assert gpu.pending(stream.handle) == ["memcpy H2D", "memcpy D2H"]
        api.synchronize(stream)
    np.testing.assert_array_equal(back.array, [[0, 1, 2]])
    with pytest.raises(ValueError):
        api.copy_htod_async(api.alloc(4), host.array, stream)
    with pytest.raises(cl.CudaError, match=r"cudaErrorMemoryAllocation \(2\): out of memory"):
        api.alloc(1 << 41)
    api.free(dev)
    assert dev.ptr == 0
    api.free(dev)  # idempotent
    api.free_pinned(host)
    api.destroy_stream(stream)


def test_no_test_folder_shadows_an_inference_library() -> None:
    """pytest puts test folders without __init__.py on sys.path (rootdir 'prepend' mode):
    a folder named like a real package (tests/tensorrt) would shadow TensorRT itself and
    make every GPU test skip with a wrong reason. Keep such folders nested (tests/backends/)."""
    shadowing = {"tensorrt", "onnxruntime", "torch", "onnx", "pycuda", "cuda", "numpy", "adn_edge", "platform"}
    tests = REPO / "tests"
    assert not [p.name for p in tests.iterdir() if p.is_dir() and p.name in shadowing]
