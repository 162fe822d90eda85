"""``adn-edge bench`` end to end on the CPU, with and without a (fake) power meter.

The energy run uses a test double of ``tegrastats`` (a script on PATH replaying a
recorded Orin Nano line at the requested interval): it exercises the orchestration,
and its numbers are the fixture's, never a measurement.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from adn_edge.modeldir import manifest
from adn_edge.bench.harness import BenchOptions, run_bench
from adn_edge.modeldir.results import validate_bench
from adn_edge.export import export
from adn_edge.export.segments import export_segments
from adn_edge.models import create_model
from adn_edge.models.random_weights import randomize
from tests._util import FIXTURES, run_cli
from tests.power.test_tegrastats_sampler import FAKE_TEGRASTATS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchdir")
    export(randomize(create_model("resnet_tiny"), input_size=32), out, ["1111", "0101", "0000"])
    return out


def test_cpu_bench_writes_a_valid_report_csv_and_plot(model_dir, capsys) -> None:
    code, out, err = run_cli(["bench", model_dir, "--device", "cpu", "-n", "100", "--warmup", "2",
                              "--warmup-seconds", "0", "--plot", model_dir / "pareto.png", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    validate_bench(report)
    assert report["backend"] == "onnxruntime" and report["device"]["kind"] == "cpu"
    assert report["power"]["source"] == "none" and report["power"]["measured"] is False
    assert list(report["subnets"]) == ["1111", "0101", "0000"]
    for e in report["subnets"].values():
        lat = e["latency_ms"]
        assert e["iterations"] >= 100 and 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
        assert e["energy_mj"] is None and e["power_w"] is None
    on_disk = json.loads((model_dir / "bench-cpu.json").read_text())
    assert on_disk["subnets"].keys() == report["subnets"].keys()
    assert (model_dir / "bench-cpu.csv").read_text().count("\n") >= 4
    assert (model_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_energy_with_a_tegrastats_double(model_dir, tmp_path, monkeypatch) -> None:
    exe = tmp_path / "bin" / "tegrastats"
    exe.parent.mkdir()
    exe.write_text(FAKE_TEGRASTATS.replace("{python}", sys.executable))
    exe.chmod(0o755)
    line = (FIXTURES / "tegrastats" / "orin_nano_jp6.txt").read_text().splitlines()[0]
    lines = tmp_path / "lines.txt"
    lines.write_text(line + "\n")
    monkeypatch.setenv("FAKE_TEGRASTATS_LINES", str(lines))
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    opts = BenchOptions(device="cpu", power="tegrastats", subnets=["1111"], iterations=20, warmup_iters=1,
                        warmup_s=0, idle_s=0.5, interval_ms=20)
    report = run_bench(model_dir, opts, write=False)
    e = report["subnets"]["1111"]
    watts = 5.704  # VDD_IN of the replayed line: constant, so energy is power x time exactly
    assert report["power"]["source"] == "tegrastats" and report["power"]["idle_w"] == pytest.approx(watts)
    assert e["power_w"] == pytest.approx(watts, rel=1e-6)
    assert e["power_samples"] >= 20
    assert e["energy_mj"] == pytest.approx(watts * e["power_run_s"] / e["energy_inferences"] * 1000, rel=1e-3)
    assert e["energy_above_idle_mj"] == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_exit_2(model_dir, tmp_path, capsys, monkeypatch) -> None:
    for args, needle in (
        (["bench", model_dir, "--device", "tpu"], "device"),
        (["bench", model_dir, "--device", "cpu", "--batch", "0"], "--batch"),
        (["bench", tmp_path / "nope", "--device", "cpu"], "does not exist"),
        (["bench", model_dir, "--device", "cpu", "--subnet", "1"], "4 skippable stages"),
        (["bench", model_dir, "--device", "cpu", "--subnet", "1010"], "not in this model directory"),
    ):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and needle in err.replace("\n", " "), (args, err)
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats anywhere
    code, _, err = run_cli(["bench", model_dir, "--device", "cpu", "--power", "tegrastats"], capsys)
    assert code == 2 and "tegrastats" in err


def test_segmented_bench_is_reported_apart(tmp_path, capsys) -> None:
    """A segmented run writes bench-cpu-segmented.json (marked ``segmented``) and leaves the
    monolithic report alone, and the other way round."""
    model = randomize(create_model("resnet_tiny"), input_size=32)
    export(model, tmp_path, ["1111"])
    export_segments(model, tmp_path)
    code, out, err = run_cli(["bench", tmp_path, "--device", "cpu", "--segmented", "--subnet", "1111", "--subnet",
                              "0000", "-n", "5", "--warmup", "1", "--warmup-seconds", "0"], capsys)
    assert code == 0, err
    out = out.replace("\n", "")  # rich wraps at the terminal width
    assert "(segmented)" in out and "bench-cpu-segmented.json" in out
    assert not (tmp_path / "bench-cpu.json").exists() and (tmp_path / "bench-cpu-segmented.csv").exists()
    seg = json.loads((tmp_path / "bench-cpu-segmented.json").read_text())
    validate_bench(seg)
    assert seg["segmented"] is True and seg["backend"] == "onnxruntime"
    assert seg["runtime"]["backend"] == "onnxruntime-segmented" and seg["runtime"]["engine"]["segments"] == 8
    # 0000 has no monolithic graph here: its cost comes from the segments record
    assert seg["subnets"]["0000"]["gmacs"] == manifest.load(tmp_path)["segments"]["subnets"]["0000"]["gmacs"]
    mono = run_bench(tmp_path, BenchOptions(subnets=["1111"], iterations=5, warmup_iters=1, warmup_s=0))
    assert mono["segmented"] is False and mono["runtime"]["backend"] == "onnxruntime"
    assert json.loads((tmp_path / "bench-cpu.json").read_text())["created"] == mono["created"]
    assert json.loads((tmp_path / "bench-cpu-segmented.json").read_text()) == seg


def test_a_bench_at_another_precision_is_reported_apart(model_dir, tmp_path) -> None:
    """``--precision`` names the report (bench-cpu-fp32.json) and every report records the
    precision that ran, so an INT8 run never replaces the default one."""
    import shutil

    from adn_edge.modeldir.names import bench_name

    model_dir = shutil.copytree(model_dir, tmp_path / "d")
    assert bench_name("orin", False, "int8") == "bench-orin-int8.json"
    assert bench_name("orin", True, "fp16") == "bench-orin-fp16-segmented.json"
    opts = dict(subnets=["1111"], iterations=5, warmup_iters=1, warmup_s=0)
    default = run_bench(model_dir, BenchOptions(**opts))
    asked = run_bench(model_dir, BenchOptions(precision="fp32", **opts))
    assert default["precision"] == asked["precision"] == "fp32"
    assert json.loads((model_dir / "bench-cpu.json").read_text())["created"] == default["created"]
    assert json.loads((model_dir / "bench-cpu-fp32.json").read_text())["created"] == asked["created"]
