"""Pareto sets and the plot files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adn_edge.bench.pareto import pareto_codes, pareto_front, plot, report_pareto
from adn_edge.errors import AdnError


def test_minimise_cost_maximise_accuracy():
    # cost, accuracy
    pts = {"0000": (2.0, 70.0), "0001": (3.0, 72.0), "0010": (3.5, 71.0), "0100": (4.0, 74.0),
           "1000": (4.0, 73.0), "1111": (6.0, 76.0), "1110": (7.0, 75.0)}
    assert pareto_codes(pts) == ["0000", "0001", "0100", "1111"]


def test_minimise_both():
    costs, values = [1, 2, 3, 2], [5, 3, 1, 4]
    assert pareto_front(costs, values, maximize_value=False) == [0, 1, 2]


def test_ties_and_duplicates():
    # Identical points do not dominate each other; same cost with lower value is dominated.
    assert pareto_front([1, 1, 1], [5, 5, 4]) == [0, 1]
    assert pareto_front([], []) == []


def test_none_and_nan_are_ignored():
    assert pareto_codes({"a": (1.0, None), "b": (2.0, 1.0), "c": (None, 9.0)}) == ["b"]
    assert pareto_front([1.0, float("nan")], [1.0, 9.0]) == [0]


def _dominated(i, pts):
    ci, vi = pts[i]
    return any(cj <= ci and vj >= vi and (cj < ci or vj > vi) for j, (cj, vj) in enumerate(pts) if j != i)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=40))
def test_front_is_exactly_the_non_dominated_points(pts):
    front = pareto_front([c for c, _ in pts], [v for _, v in pts])
    assert set(front) == {i for i in range(len(pts)) if not _dominated(i, pts)}
    assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


def report(with_energy=True, with_gmacs=True):
    subs = {}
    for i in range(16):
        code = format(15 - i, "04b")
        depth = code.count("1")
        lat = 2.0 + depth * 1.5 + (i % 3) * 0.2
        e = {"latency_ms": {"mean": lat, "p50": lat, "p90": lat, "p99": lat, "min": lat, "max": lat},
             "throughput_ips": 1000 / lat, "iterations": 100,
             "power_w": 6.0 if with_energy else None, "energy_mj": lat * 6.0 if with_energy else None,
             "energy_above_idle_mj": None, "power_samples": 30 if with_energy else None}
        if with_gmacs:
            e["gmacs"] = 1.0 + depth + i * 0.01
        subs[code] = e
    return {"schema": 1, "device": {"kind": "cpu", "name": "Test CPU", "power_mode": None},
            "backend": "onnxruntime", "batch": 1, "power": {"source": "none"}, "subnets": subs}


PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_against_gmacs_when_accuracy_is_unknown(tmp_path):
    out = plot(report(), tmp_path / "sub" / "pareto.png")
    assert out.read_bytes().startswith(PNG)
    assert not [p for p in out.parent.iterdir() if p.name != "pareto.png"]  # no temp file left


def test_plot_against_accuracy_latency_only(tmp_path):
    acc = {format(i, "04b"): 70 + bin(i).count("1") * 1.5 for i in range(16)}
    out = plot(report(with_energy=False, with_gmacs=False), tmp_path / "p.png", accuracy=acc, title="t")
    assert out.read_bytes().startswith(PNG)


def test_plot_svg(tmp_path):
    assert b"<svg" in plot(report(), tmp_path / "p.svg").read_bytes()[:2000]


def test_plot_errors(tmp_path):
    with pytest.raises(AdnError, match="accuracy"):
        plot(report(with_gmacs=False), tmp_path / "p.png")
    with pytest.raises(AdnError, match="format"):
        plot(report(), tmp_path / "p.jpgx")
    assert not (tmp_path / "p.png").exists()


def test_report_pareto():
    r = report()
    got = report_pareto(r)
    assert got["by"] == "gmacs" and got["latency"] and got["energy"]
    assert "1111" in got["latency"]  # the deepest sub-network is always optimal (largest GMACs)
    acc = {c: 1.0 for c in r["subnets"]}
    got = report_pareto(report(with_energy=False), accuracy=acc)
    assert got["by"] == "accuracy" and got["energy"] is None
    fastest = min(r["subnets"], key=lambda c: r["subnets"][c]["latency_ms"]["mean"])
    assert got["latency"] == [fastest]  # equal accuracy: only the fastest is optimal
