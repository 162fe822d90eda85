"""``adn-edge build`` on the command line: exit codes, messages, table and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _buildkit import FakeToolchain, inspector

import adn_edge.backends.tensorrt.build as build_pkg
from adn_edge.cli.app import main

REPO = Path(__file__).resolve().parents[3]


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, " ".join(err.split())  # error paragraphs are wrapped


def test_without_tensorrt_exit_2_subprocess(model_dir: Path, tmp_path: Path) -> None:
    """The real entry point, in a fresh interpreter where `import tensorrt` fails."""
    shadow = tmp_path / "shadow"
    (shadow / "tensorrt").mkdir(parents=True)
    (shadow / "tensorrt" / "__init__.py").write_text("raise ImportError('simulated: no TensorRT here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "adn_edge.cli.app", "build", str(model_dir)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "TensorRT is not installed" in proc.stderr
    assert "python3-libnvinfer" in proc.stderr and "tensorrt-cu12" in proc.stderr


def test_without_tensorrt_exit_2(model_dir: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code, out, err = run_main(["build", str(model_dir), "--precision", "fp16"], capsys)
    assert code == 2 and out == ""
    assert "error: TensorRT is not installed" in err and "pycuda" in err


@pytest.mark.parametrize("args,needle", [
    (["--precision", "fp64"], "not a build precision"),
    (["--subnet", "0000"], "not a sub-network code"),
    (["--max-batch", "0"], "--max-batch"),
    (["--min-batch", "4", "--max-batch", "2"], "min <= opt <= max"),
    (["--precision", "int8", "--calib", "/nonexistent/calib"], "calibration folder"),
])
def test_bad_input_exit_2(model_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    code, _, err = run_main(["build", str(model_dir), *args], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_missing_directory_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["build", str(tmp_path / "nope")], capsys)
    assert code == 2 and "does not exist" in err


def test_table_and_json(model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_pkg, "_real_toolchain", lambda cuda, device, verbose: FakeToolchain())
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_main(["build", str(model_dir)], capsys)
    assert code == 0
    assert "tiny_11.fp16.engine" in out and "built" in out and "TensorRT 10.3.0 on Orin" in out
    assert "[1/2]" in err  # progress on stderr
    code, out, _ = run_main(["build", str(model_dir), "--json"], capsys)
    assert code == 0
    results = json.loads(out)
    assert [(r["code"], r["status"]) for r in results] == [("11", "skipped"), ("01", "skipped")]


def test_precision_failure_exit_1(model_dir: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_pkg, "_real_toolchain",
                        lambda cuda, device, verbose: FakeToolchain(inspect=lambda job: inspector("fp32_trt10")))
    code, _, err = run_main(["build", str(model_dir)], capsys)
    assert code == 1
    assert "FP16 build came out without any FP16 layer" in err and "Traceback" not in err
