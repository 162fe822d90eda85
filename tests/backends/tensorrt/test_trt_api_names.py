"""The static name check (``.ci/trt_names.py``): every TensorRT name the package uses
exists in TensorRT 10.3, 10.16 and 11.1, or sits behind a version check or ``hasattr``.

It runs here, in the suite CI runs, so that an edit using a 10.x-only name unguarded
(the way ``builder.py`` once subclassed ``trt.IInt8EntropyCalibrator2`` at module level,
which made every build fail on TensorRT 11) fails CI on a machine without TensorRT.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / ".ci"))
try:
    import trt_names
finally:
    sys.path.pop(0)

LISTINGS = {lst.version: lst for lst in trt_names.listings()}


def flagged(source: str) -> dict[str, list[str]]:
    uses = trt_names.scan(textwrap.dedent(source), "snippet.py")
    return {v: [line.split(": ", 1)[1].split(" does not", 1)[0] for line in trt_names.violations(uses, lst)]
            for v, lst in LISTINGS.items()}


def test_the_listings_are_the_three_supported_releases() -> None:
    assert set(LISTINGS) == {"v10.3.0", "v10.16", "v11.1"}


def test_the_package_uses_no_unguarded_name_missing_from_a_release() -> None:
    uses, found = trt_names.check([REPO / "adn_edge"])
    assert found == {v: [] for v in LISTINGS}, "\n".join(line for lines in found.values() for line in lines)
    files = {u.path for u in uses}
    assert {"adn_edge/backends/tensorrt/builder.py", "adn_edge/backends/tensorrt/runner.py"} <= files
    # typed objects are followed, not only `trt.` chains: a config, an engine, a context of a dataclass
    assert {("IBuilderConfig", "set_flag"), ("ICudaEngine", "get_tensor_profile_shape"),
            ("IExecutionContext", "execute_async_v3"), ("IExecutionContext", "nvtx_verbosity")} <= \
        {(u.owner, u.name) for u in uses}


def test_a_module_level_calibrator_subclass_is_caught() -> None:
    """The defect-1 pattern: unguarded, it names a class TensorRT 11 does not have."""
    out = flagged("""
        import tensorrt as trt

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                trt.IInt8EntropyCalibrator2.__init__(self)
    """)
    assert out["v11.1"] == ["trt.IInt8EntropyCalibrator2", "trt.IInt8EntropyCalibrator2"]
    assert out["v10.3.0"] == out["v10.16"] == []


@pytest.mark.parametrize("guard", [
    "if self.env.trt_major < 11:\n    {body}",
    "if hasattr(trt, 'IInt8EntropyCalibrator2'):\n    {body}",
    "if not hasattr(trt, 'IInt8EntropyCalibrator2'):\n    raise RuntimeError('no')\n{body}",
    "try:\n    {body}\nexcept AttributeError:\n    pass",
])
def test_guarded_uses_pass(guard: str) -> None:
    body = "config.int8_calibrator = c; config.set_flag(trt.BuilderFlag.INT8)"
    src = "import tensorrt as trt\n\ndef f(self, builder: trt.Builder, c):\n    config = builder.create_builder_config()\n"
    src += textwrap.indent(guard.format(body=body), "    ") + "\n"
    assert flagged(src) == {v: [] for v in LISTINGS}
    unguarded = src.split("\n    if")[0].split("\n    try")[0] + f"\n    {body}\n"
    assert flagged(unguarded)["v11.1"] == ["trt.IBuilderConfig.int8_calibrator", "trt.BuilderFlag.INT8"]


def test_members_of_typed_objects_are_checked() -> None:
    out = flagged("""
        from __future__ import annotations
        from dataclasses import dataclass
        import tensorrt as trt

        @dataclass
        class Slot:
            engine: trt.ICudaEngine

        def size(slot: Slot, runtime: trt.Runtime, blob: bytes) -> int:
            engine = runtime.deserialize_cuda_engine(blob)
            return slot.engine.device_memory_size + engine.device_memory_size
    """)
    assert out["v11.1"] == ["trt.ICudaEngine.device_memory_size"] * 2 and out["v10.3.0"] == []


def test_annotations_and_literal_getattr_are_not_uses() -> None:
    assert flagged("""
        from __future__ import annotations
        import tensorrt as trt

        def f(c: trt.IInt8EntropyCalibrator2) -> trt.IInt8Calibrator:
            return getattr(trt, "IInt8EntropyCalibrator2", None)
    """) == {v: [] for v in LISTINGS}


def test_the_command_line_reports_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import tensorrt as trt\nFLAG = trt.BuilderFlag.FP16\n")
    assert trt_names.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.py:2: trt.BuilderFlag.FP16 does not exist in TensorRT v11.1" in out
    assert trt_names.main([str(REPO / "adn_edge")]) == 0
