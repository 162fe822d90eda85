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


class _FakeCudart:
    """Enough of cuda-python's runtime module to exercise CudaPython's host-side logic
    (tuple returns, error checks, pinned arrays) with host memory standing in."""

    class cudaError_t:  # noqa: N801 - mirrors the binding
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    class _Props:
        name = b"Orin (nvgpu)\0\0\0"
        major, minor = 8, 7

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.blocks: dict[int, object] = {}
        self.copies: list[tuple[int, int, int, int]] = []

    def cudaGetErrorString(self, err):  # noqa: N802
        return (0, b"out of memory" if err == 2 else b"error")

    def cudaGetDeviceCount(self):  # noqa: N802
        return (0, 1)

    def cudaSetDevice(self, d):  # noqa: N802
        return (0,)

    def cudaGetDeviceProperties(self, d):  # noqa: N802
        return (0, self._Props())

    def _alloc(self, n):
        buf = self.ctypes.create_string_buffer(n)
        ptr = self.ctypes.addressof(buf)
        self.blocks[ptr] = buf
        return ptr

    def cudaMalloc(self, n):  # noqa: N802
        return (2, None) if n > 1 << 40 else (0, self._alloc(n))

    def cudaMallocHost(self, n):  # noqa: N802
        return (0, self._alloc(n))

    def cudaFree(self, p):  # noqa: N802
        self.blocks.pop(p)
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        self.ctypes.memmove(dst, src, count)
        self.copies.append((dst, src, count, kind))
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        assert flags == 1  # non-blocking: see CudaPython.create_stream
        return (0, 1234)

    def cudaStreamSynchronize(self, s):  # noqa: N802
        return (0,)

    def cudaStreamDestroy(self, s):  # noqa: N802
        return (0,)


def test_cuda_python_layer_on_a_fake_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCudart()
    monkeypatch.setattr(cuda_python, "import_cudart", lambda: fake)
    api = cuda_python.CudaPython(0)
    assert api.device_name() == "Orin (nvgpu)" and api.compute_capability() == (8, 7)
    host = api.alloc_pinned((2, 3), np.dtype(np.float32))
    assert host.array.shape == (2, 3) and host.array.dtype == np.float32
    host.array[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = api.alloc(host.array.nbytes)
    stream = api.create_stream()
    assert stream.handle == 1234
    with api.activate():
        api.copy_htod_async(dev, host.array[:1], stream)  # first row only: 12 bytes
        assert fake.copies[-1][2] == 12
        back = api.alloc_pinned((1, 3), np.dtype(np.float32))
        api.copy_dtoh_async(back.array, dev, stream)
        api.synchronize(stream)
    np.testing.assert_array_equal(back.array, [[0, 1, 2]])
    with pytest.raises(ValueError):
        api.copy_htod_async(api.alloc(4), host.array, stream)
    with pytest.raises(cl.CudaError, match="out of memory"):
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
    shadowing = {"tensorrt", "onnxruntime", "torch", "onnx", "pycuda", "cuda", "numpy", "adn_edge"}
    tests = REPO / "tests"
    assert not [p.name for p in tests.iterdir() if p.is_dir() and p.name in shadowing]
