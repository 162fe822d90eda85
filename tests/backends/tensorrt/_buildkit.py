"""Helpers for the build tests: a tiny model directory and a fake TensorRT toolchain.

The model directory holds real ONNX graphs (built with ``onnx.helper``, two
sub-networks of a 2-stage "tiny" model) and a real manifest, so everything except
TensorRT itself runs for real. The fake toolchain stands in for
:class:`adn_edge.backends.tensorrt.builder.TrtToolchain` and returns the hand-written
inspector JSON of ``data/`` (the format TensorRT 10 documents).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.modeldir import manifest
from adn_edge.backends.tensorrt.calibration import CalibrationPlan
from adn_edge.backends.tensorrt.options import BuildOptions, ProfileShapes
from adn_edge.backends.tensorrt.plan import BuiltEngine, Job
from adn_edge.backends.tensorrt.env import Environment
from adn_edge.fileio import write_bytes

DATA = Path(__file__).parent / "data"
ARCH = "tiny"
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def inspector(name: str) -> str:
    return (DATA / f"inspector_{name}.json").read_text()


def tiny_onnx(seed: int, size: int = 8, classes: int = 5, width: int = 4, fp16: bool = False) -> bytes:
    """Conv(3->width) + ReLU + global average pool + Flatten + Gemm(width->classes), dynamic N.

    ``fp16``: float16 weights and compute with float32 I/O (Casts at both ends), like
    the graphs of ``adn-edge export --fp16``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((width, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(width).astype(np.float32) * 0.1
    fw = rng.standard_normal((classes, width)).astype(np.float32) * 0.5
    fb = rng.standard_normal(classes).astype(np.float32) * 0.1
    if fp16:
        w, b, fw, fb = (a.astype(np.float16) for a in (w, b, fw, fb))
    x_in, y_out = ("x16", "y16") if fp16 else ("input", "logits")
    nodes = [
        helper.make_node("Conv", [x_in, "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="/flatten/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], [y_out], transB=1, name="/fc/Gemm"),
    ]
    if fp16:
        nodes.insert(0, helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16, name="/cast_in"))
        nodes.append(helper.make_node("Cast", ["y16"], ["logits"], to=TensorProto.FLOAT, name="/cast_out"))
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w, "conv.weight"), (b, "conv.bias"), (fw, "fc.weight"), (fb, "fc.bias"))]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="adn-edge-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_model_dir(root: Path, codes: tuple[str, ...] = ("11", "01"), static_batch: int | None = None,
                   size: int = 8, fp16_files: bool = False, width: int = 4) -> Path:
    d = root / "tiny"
    d.mkdir(parents=True, exist_ok=True)
    data = manifest.new(ARCH, 2, 5, [static_batch, 3, size, size], MEAN, STD,
                        {"path": None, "sha256": "test", "weights": "random-init"}, 17)
    for i, code in enumerate(codes):
        name = f"{ARCH}_{code}.onnx"
        write_bytes(d / name, tiny_onnx(i, size, width=width))
        files = {"onnx": manifest.file_record(d, name)}
        if fp16_files:
            name16 = f"{ARCH}_{code}.fp16.onnx"
            write_bytes(d / name16, tiny_onnx(i, size, width=width, fp16=True))
            files["onnx_fp16"] = manifest.file_record(d, name16)
        data["subnets"][code] = {"code": code, "skip_cfg": "".join("T" if c == "0" else "F" for c in code),
                                 "gmacs": 0.001 * (3 - i), "params": 100, "files": files}
    manifest.save(d, data)
    return d


class FakeToolchain:
    """Records what build_directory asks of TensorRT; answers with canned inspector JSON."""

    def __init__(self, env: Environment | None = None,
                 inspect: Callable[[Job], str] | None = None) -> None:
        self.env = env or Environment("10.3.0", "Orin (nvgpu)", "8.7", 8, 7619)  # an Orin Nano 8 GB
        self.inspect = inspect or (lambda job: inspector(
            {"fp16": "fp16_trt10", "fp32": "fp32_trt10", "int8": "int8_trt10", "best": "int8_trt10"}[job.precision]))
        self.builds: list[dict[str, Any]] = []
        self.cache_loads: list[Path] = []
        self.cache_saves: list[Path] = []
        self.closed = False

    def load_timing_cache(self, path: Path) -> str:
        self.cache_loads.append(path)
        return f"timing cache {path.name}: " + ("reusing" if path.exists() else "new")

    def save_timing_cache(self, path: Path) -> None:
        write_bytes(path, b"fake timing cache")
        self.cache_saves.append(path)

    def build(self, job: Job, onnx_path: Path, onnx_bytes: bytes, options: BuildOptions,
              profile: ProfileShapes, calibration: CalibrationPlan | None = None) -> BuiltEngine:
        batches = None
        if calibration is not None:
            batches = 0
            if not calibration.reuse_cache:
                assert calibration.data is not None
                shapes = {b.shape for b in calibration.data.batches()}
                batches = len(calibration.data)
                assert shapes <= {calibration.data.shape}
                write_bytes(calibration.cache_path, b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
        self.builds.append({"job": job, "options": options, "profile": profile, "calibration": calibration,
                            "onnx": onnx_path.name})
        plan = b"PLAN " + hashlib.sha256(onnx_bytes + repr(options).encode()).digest()
        return BuiltEngine(plan, self.inspect(job), 0.25, batches, ("a TensorRT warning",))

    def close(self) -> None:
        self.closed = True



def write_pngs(folder: Path, n: int, size: tuple[int, int] = (12, 10), seed: int = 0) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths
