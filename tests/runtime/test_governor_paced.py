"""The governor (and the robot loop example) take their budgets from the bench report's
paced loop (``adn-edge bench --hz N``) when it has one: a loop that sleeps between ticks
runs each inference colder than a back-to-back benchmark."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from adn_edge.errors import AdnError
from adn_edge.runtime import DeadlineGovernor, EngineSwitcher
from tests._util import REPO
from tests.runtime._helpers import bench_report

LADDER = ["0000", "0101", "1011", "1111"]
HOT = {"0000": 4.0, "0101": 6.0, "1011": 8.0, "1111": 10.0}
PACED = {"0000": 6.0, "0101": 7.0, "1011": 11.0, "1111": 12.0}


def with_paced(report: dict, paced: dict[str, float], hz: float = 10.0) -> dict:
    for code, ms in paced.items():
        report["subnets"][code]["paced"] = {
            "hz": hz, "iterations": 50, "deadline_ms": 1000 / hz, "latency_cv": 0.03,
            "latency_ms": {"mean": ms * 0.9, "p50": ms * 0.9, "p90": ms * 0.95, "p99": ms, "min": ms * 0.8,
                           "max": ms * 1.1, "std": 0.1},
            "deadline_misses": 0, "hot_deadline_misses": 0, "hot_iterations": 100, "over_hot_p99": 3}
    report["paced"] = {"hz": hz, "period_ms": 1000 / hz, "deadline_ms": 1000 / hz, "iterations": 50}
    return report


@pytest.fixture
def directory(model_dir, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    return d


def test_paced_latencies_are_the_estimates_when_the_report_has_them(directory, inputs):
    (directory / "bench-cpu.json").write_text(json.dumps(with_paced(bench_report(HOT), PACED)))
    with EngineSwitcher.open(directory, subnets=LADDER, threads=1, segmented=False) as sw:
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=10.0)
        assert gov.estimates == PACED and "paced loop at 10 Hz" in gov.estimates_source
        # 0101 is predicted at 7 ms paced (6 ms hot would have let 1011 at 8 ms start): 0.9 * 10 ms fits 0101 only
        assert gov.current == "0101" and sw.active == "0101"
        assert gov.describe()["estimates_source"] == gov.estimates_source and gov.estimates_hz == 10.0
        hot = DeadlineGovernor.for_switcher(sw, deadline_ms=10.0, latencies="hot")
        assert hot.estimates == HOT and "hot loop" in hot.estimates_source and hot.current == "1011"
        assert hot.estimates_hz is None
        gov.infer(inputs[0])


def test_the_ladder_is_the_pareto_set_of_the_paced_latencies(directory):
    paced = {**PACED, "0101": 11.5}  # slower paced than 1011: dominated, off the ladder
    (directory / "bench-cpu.json").write_text(json.dumps(with_paced(bench_report(HOT), paced)))
    with EngineSwitcher.open(directory, subnets=LADDER, threads=1, segmented=False) as sw:
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=20.0)
        assert gov.ladder == ["0000", "1011", "1111"]


def test_without_paced_figures_the_hot_ones_serve_and_paced_can_be_required(directory):
    (directory / "bench-cpu.json").write_text(json.dumps(bench_report(HOT)))
    with EngineSwitcher.open(directory, subnets=LADDER, threads=1, segmented=False) as sw:
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=10.0)
        assert gov.estimates == HOT and "hot loop" in gov.estimates_source
        with pytest.raises(AdnError, match="--hz"):
            DeadlineGovernor.for_switcher(sw, deadline_ms=10.0, latencies="paced")
        with pytest.raises(AdnError, match="latencies"):
            DeadlineGovernor.for_switcher(sw, deadline_ms=10.0, latencies="fast")


def test_a_damaged_paced_figure_is_refused(directory):
    report = with_paced(bench_report(HOT), PACED)
    report["subnets"]["0101"]["paced"]["latency_ms"]["p99"] = -1.0
    (directory / "bench-cpu.json").write_text(json.dumps(report))
    with EngineSwitcher.open(directory, subnets=LADDER, threads=1, segmented=False) as sw:
        with pytest.raises(AdnError, match="paced.latency_ms.p99"):
            DeadlineGovernor.for_switcher(sw, deadline_ms=10.0)


def run_loop(directory, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "robot_loop.py"), str(directory), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_robot_loop_budgets_come_from_the_paced_report_at_its_rate(model_dir, tmp_path):
    d = tmp_path / "loop"
    shutil.copytree(model_dir, d)
    codes = sorted(json.loads((d / "manifest.json").read_text())["subnets"])
    hot = {c: 0.5 + 0.1 * c.count("1") for c in codes}
    paced = {c: 400 * v for c, v in hot.items()}  # slower than any call made now: the report's figures stand
    (d / "bench-cpu.json").write_text(json.dumps(with_paced(bench_report(hot), paced, hz=50.0)))
    out = run_loop(d, "--hz", "50", "--ticks", "6")
    first = out.splitlines()[0]
    assert "paced loop at 50 Hz" in first and "thread(s)" in first
    deep = re.search(r": (\d{4}) ([\d.]+) ms", first)
    assert deep and float(deep.group(2)) == pytest.approx(paced[deep.group(1)], abs=0.01)
    # at another rate the report's paced figures are not this loop's: measured here, paced at that rate
    out = run_loop(d, "--hz", "40", "--ticks", "3")
    assert "measured here (paced at 40 Hz" in out.splitlines()[0]
