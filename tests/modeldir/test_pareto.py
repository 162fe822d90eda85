"""The one Pareto rule shared by plots, policies and the demo."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adn_edge.modeldir.pareto import LATENCY_STAT, latency, pareto_front


def test_minimise_cost_maximise_accuracy():
    pts = {"0000": (2.0, 70.0), "0001": (3.0, 72.0), "0010": (3.5, 71.0), "0100": (4.0, 74.0),
           "1000": (4.0, 73.0), "1111": (6.0, 76.0), "1110": (7.0, 75.0)}
    assert pareto_front({c: x for c, (x, _) in pts.items()}, {c: q for c, (_, q) in pts.items()}) == \
        ["0000", "0001", "0100", "1111"]


def test_two_costs_trade_off():
    points = {"a": [1.0], "b": [2.0], "c": [3.0], "d": [2.5]}
    quality = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 1.5}  # d is slower than b and worse: dominated
    assert pareto_front(points, quality) == ["a", "b", "c"]
    assert pareto_front({"a": [1.0, 5.0], "b": [2.0, 1.0]}, {"a": 1.0, "b": 1.0}) == ["a", "b"]


def test_ties_duplicates_missing_and_nan():
    assert pareto_front({"a": 1, "b": 1, "c": 1}, {"a": 5, "b": 5, "c": 4}) == ["a", "b"]
    assert pareto_front({}, {}) == []
    assert pareto_front({"a": 1.0, "b": 2.0, "c": None}, {"a": None, "b": 1.0, "c": 9.0}) == ["b"]
    assert pareto_front({"a": 1.0, "b": float("nan")}, {"a": 1.0, "b": 9.0}) == ["a"]
    assert pareto_front({"a": [1.0, None]}, {"a": 1.0}) == []


def _dominated(i, pts):
    ci, vi = pts[i]
    return any(cj <= ci and vj >= vi and (cj < ci or vj > vi) for j, (cj, vj) in enumerate(pts) if j != i)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=40))
def test_front_is_exactly_the_non_dominated_points(pts):
    codes = [f"c{i}" for i in range(len(pts))]
    front = pareto_front({c: p[0] for c, p in zip(codes, pts)}, {c: p[1] for c, p in zip(codes, pts)})
    assert set(front) == {codes[i] for i in range(len(pts)) if not _dominated(i, pts)}
    assert [pts[codes.index(c)][0] for c in front] == sorted(pts[codes.index(c)][0] for c in front)


def test_latency_statistic():
    assert LATENCY_STAT == "p99"
    e = {"latency_ms": {"mean": 1.0, "p50": 0.9, "p99": 3.0}}
    assert latency(e) == 3.0 and latency(e, "p50") == 0.9
    assert latency({"latency_ms": {"mean": 2.0}}) == 2.0  # fallback to the mean
    assert latency({"latency_ms": 4}) == 4.0 and latency({}) is None
