"""``adn-edge demo`` end to end (reduced timing settings; the pipeline is the real one)."""

from __future__ import annotations

import json

import pytest

from adn_edge.data import EMBEDDED_DATASET
from adn_edge.demo import spaced_budgets
from adn_edge.modeldir import manifest
from adn_edge.modeldir.pareto import pareto_front
from adn_edge.modeldir.results import validate_bench
from tests._util import run_cli


def test_demo_exports_verifies_evaluates_benches_switches_and_plots(tmp_path, capsys) -> None:
    from adn_edge.bench.threads import default_cpu_threads

    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--out", out, "--iterations", "40", "--recal-samples", "256", "--json"],
                                capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    data = manifest.load(out)
    assert len(data["subnets"]) == 16 and data["recalibration"]["data"] == f"builtin:{EMBEDDED_DATASET}"
    assert all(e["parity"]["onnx"]["rel_err"] <= 1e-4 for e in data["subnets"].values())
    # The recommended recipe keeps every sub-network of the embedded model accurate, and
    # there is something to trade: deeper sub-networks are more accurate than the base-net.
    top1 = {c: s["top1"] for c, s in summary["subnets"].items()}
    assert len(top1) == 16 and min(top1.values()) >= 85.0, top1
    assert max(top1, key=top1.get) != "0000" and max(top1.values()) - top1["0000"] >= 1.0, top1
    bench = json.loads((out / "bench-cpu.json").read_text())
    validate_bench(bench)
    assert (out / "eval.json").exists() and (out / "pareto.png").stat().st_size > 10_000
    assert summary["switches"] and all(s["subnet"] in top1 for s in summary["switches"])
    assert set(summary["pareto"]) <= set(top1) and summary["pareto"]
    # The bench ran with the bench's default threads, and the demo says which timings were noisy.
    assert summary["threads"] == default_cpu_threads() == bench["settings"]["threads"]
    assert bench["settings"]["rounds_used"] == 4  # 40 calls: interleaved in blocks of 10, as the bench does
    assert "noise" in summary and all("latency_cv" in s for s in summary["subnets"].values())
    # The budgets walk the Pareto front: every Pareto-optimal sub-network is chosen by one
    # budget it fits, whichever they are, and one budget fits nothing (the closest answers).
    p99 = {c: s["latency_ms_p99"] for c, s in summary["subnets"].items()}
    assert summary["pareto"] == pareto_front(p99, top1)
    fitting = [s for s in summary["switches"] if s["fits"]]
    assert [s["subnet"] for s in fitting] == list(reversed(summary["pareto"]))
    assert all(s["p99_ms"] <= s["budget_ms"] for s in fitting)
    assert [s["subnet"] for s in summary["switches"] if not s["fits"]] == [summary["pareto"][0]]
    assert all(s["latency_cv"] is not None and s["p50_ms"] <= s["p99_ms"] for s in summary["switches"])
    assert "budget ms" in err and "chosen" in err  # the budget table is printed


def test_budgets_sit_between_consecutive_pareto_points():
    lat = {"0000": 1.0, "0010": 1.5, "0111": 3.0}
    budgets = spaced_budgets(["0000", "0010", "0111"], lat)
    assert budgets == [(3.75, "0111"), (2.25, "0010"), (1.25, "0000"), (0.8, None)]
    for budget, code in budgets:
        fits = [c for c in lat if lat[c] <= budget]
        assert (max(fits, key=lat.get) if fits else None) == code
    assert spaced_budgets(["0001"], {"0001": 2.0}) == [(2.5, "0001"), (1.6, None)]
    assert spaced_budgets([], {}) == []


@pytest.mark.parametrize("front", [["0000"], ["0000", "1111"], ["0001", "0011", "0111", "1111"]])
def test_budgets_do_not_depend_on_which_code_is_most_accurate(front):
    lat = {c: 0.2 + 0.1 * i for i, c in enumerate(front)}
    assert [c for _, c in spaced_budgets(front, lat)] == [*reversed(front), None]
