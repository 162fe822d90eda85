"""The static check that stands in for a GPU in CI: mypy against the TensorRT stubs.

Proves the set-up (``.ci/trt_stubs.py`` + ``mypy.ini``) would catch an API mistake:
a misspelled ``trt.BuilderFlag`` member must be an error, the correct spelling must
pass, and the project's TensorRT-facing modules must be clean.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TYPINGS = REPO / "typings"
TRT_MODULES = ["adn_edge/backends/tensorrt", "adn_edge/backends/cuda", "adn_edge/platform", "adn_edge/cli/build.py",
               "adn_edge/cli/doctor.py"]


@pytest.fixture(scope="module")
def mypy_api():
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (pip install mypy)")
    if not (TYPINGS / "tensorrt" / "__init__.pyi").is_file():
        proc = subprocess.run([sys.executable, str(REPO / ".ci" / "trt_stubs.py")], capture_output=True,
                              text=True, cwd=REPO, timeout=300)
        if proc.returncode != 0:
            pytest.skip("the TensorRT stubs could not be installed (tensorrt-stubs from PyPI): "
                        + (proc.stderr or proc.stdout).strip()[-300:])
    return api


def test_repairs_are_mechanical() -> None:
    sys.path.insert(0, str(REPO / ".ci"))
    try:
        import trt_stubs
    finally:
        sys.path.pop(0)
    text, counts = trt_stubs.repair(
        "from __future__ import annotations\n"
        "import tensorrt_libs as tensorrt_libs\n"
        "class P:\n"
        "    flag: bool\n"
        "    def f(self, in: list[int], out: list[int]) -> bool:\n"
        '        """:arg in: the inputs, a bool"""\n'
        "    def add_scale_nd(self, input: ITensor, mode: ScaleMode, shift: Weights = None, "
        "scale: Weights = None, power: Weights = None, channel_axis: int) -> IScaleLayer:\n"
        "        ...\n"
        "bool: DataType  # value = <DataType.BOOL: 4>\n")
    assert counts == {"in": 1, "add_scale_nd": 1, "tensorrt_libs": 1, "bool": 2}
    assert "def f(self, in_: list[int], out: list[int]) -> builtins.bool:" in text
    assert ":arg in: the inputs, a bool" in text  # docstrings untouched
    assert "    flag: builtins.bool\n" in text and "\nbool: DataType" in text  # trt.bool itself stays
    assert "channel_axis: int = ...)" in text and "tensorrt_libs: _types.ModuleType" in text
    compile(text, "stub.pyi", "exec")


def test_mypy_catches_a_misspelled_builder_flag(mypy_api, tmp_path: Path) -> None:
    bad = tmp_path / "uses_trt_bad.py"
    bad.write_text("import tensorrt as trt\n\n"
                   "def configure(config: trt.IBuilderConfig) -> None:\n"
                   "    config.set_flag(trt.BuilderFlag.FP61)\n")
    good = tmp_path / "uses_trt_good.py"
    good.write_text("import tensorrt as trt\n\n"
                    "def configure(config: trt.IBuilderConfig) -> None:\n"
                    "    config.set_flag(trt.BuilderFlag.FP16)\n"
                    "    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)\n")
    out, err, status = mypy_api.run(["--config-file", str(REPO / "mypy.ini"), str(bad), str(good)])
    assert status == 1, out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out
    # by file name: mypy's incremental cache may report the path of an earlier tmp dir
    assert "uses_trt_bad.py:4: error:" in errors[0] and 'has no attribute "FP61"' in errors[0]


def test_tensorrt_facing_modules_are_clean(mypy_api) -> None:
    out, err, status = mypy_api.run(["--config-file", str(REPO / "mypy.ini"), *[str(REPO / m) for m in TRT_MODULES]])
    assert status == 0, out + err
