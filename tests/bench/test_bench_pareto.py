"""Pareto sets and the plot files."""

from __future__ import annotations

import pytest
from adn_edge.bench.pareto import plot
from adn_edge.errors import AdnError


def test_plot_ranks_by_the_policies_latency_statistic(tmp_path, monkeypatch):
    """The plot and the policies share one Pareto function on one statistic (p99): a
    sub-network whose mean is fast but whose tail is slow is not highlighted."""
    import adn_edge.bench.pareto as bp

    r = report(with_energy=False)
    slow_tail = "0000"
    r["subnets"][slow_tail]["latency_ms"]["p99"] = 100.0  # mean still the fastest
    seen = {}
    real = bp.pareto_front

    def spy(costs, quality):
        seen.update(costs)
        return real(costs, quality)

    monkeypatch.setattr(bp, "pareto_front", spy)
    plot(r, tmp_path / "p.png")
    assert seen[slow_tail] == 100.0
    assert slow_tail not in real(seen, {c: e["gmacs"] for c, e in r["subnets"].items()})


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
