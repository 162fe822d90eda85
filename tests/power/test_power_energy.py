"""Energy integration against hand computations (the issue's 1% floor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adn_edge.errors import AdnError
from adn_edge.power import (
    PowerSample,
    idle_baseline,
    integrate_mj,
    mean_power_w,
    min_run_seconds,
    per_inference,
    window_power,
)
from adn_edge.power.tegrastats_format import parse_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tegrastats"


def samples(points, cpu_gpu=None):
    return [PowerSample(t=t, module_w=w, cpu_gpu_w=None if cpu_gpu is None else cpu_gpu[i])
            for i, (t, w) in enumerate(points)]


def test_trapezoid_with_interpolated_edges_by_hand():
    # P(0)=5, P(1)=7, P(2)=6; window [0.5, 1.5]: P(0.5)=6.0, P(1.5)=6.5.
    # E = (6 + 7)/2 * 0.5 + (7 + 6.5)/2 * 0.5 = 3.25 + 3.375 = 6.625 J.
    w = window_power(samples([(0, 5.0), (1, 7.0), (2, 6.0)]), 0.5, 1.5)
    assert w.energy_mj == pytest.approx(6625.0, rel=1e-12)
    assert w.mean_w == pytest.approx(6.625, rel=1e-12)
    assert w.samples == 1 and w.interval_ms == pytest.approx(1000.0) and w.extrapolated_s == 0.0
    assert w.method == "trapezoid"


def test_unsorted_samples_are_sorted():
    pts = [(2, 6.0), (0, 5.0), (1, 7.0)]
    assert window_power(samples(pts), 0.5, 1.5).energy_mj == pytest.approx(6625.0)


def _fixture_watts():
    if not FIXTURES.is_dir():
        pytest.skip(f"tegrastats fixtures not found at {FIXTURES}")
    watts = []
    for f in sorted(FIXTURES.glob("*.txt")):
        for line in f.read_text().splitlines():
            r = parse_line(line)
            if r.ok and r.module_w is not None:
                watts.append(r.module_w)
    return watts


def test_fixture_sequence_matches_hand_integration_within_one_percent():
    # Module power of every recorded board, replayed as one 50 ms series, three times.
    watts = _fixture_watts() * 3
    dt = 0.05
    pts = [(i * dt, w) for i, w in enumerate(watts)]
    t0, t1 = 0.013, (len(watts) - 1) * dt - 0.021
    # Hand computation, written independently: walk the segments, clip each to the window,
    # integrate the straight line over the clipped part with its midpoint value.
    energy = 0.0
    for (ta, pa), (tb, pb) in zip(pts, pts[1:]):
        lo, hi = max(ta, t0), min(tb, t1)
        if hi <= lo:
            continue
        mid = (lo + hi) / 2
        p_mid = pa + (pb - pa) * (mid - ta) / (tb - ta)
        energy += p_mid * (hi - lo)
    w = window_power(samples(pts), t0, t1)
    assert w.energy_mj == pytest.approx(energy * 1000, rel=0.01)
    assert w.energy_mj == pytest.approx(energy * 1000, rel=1e-9)  # in fact exact
    assert w.mean_w == pytest.approx(energy / (t1 - t0), rel=1e-9)
    assert w.samples == len(watts) - 2


def test_per_inference_energy_by_hand():
    # Idle 4.744 W (Orin Nano fixture line 2), run 5.704 W (line 1) for 2 s, 400 inferences.
    idle = idle_baseline(samples([(i * 0.05, 4.744) for i in range(41)]), 0.0, 2.0)
    run = window_power(samples([(10 + i * 0.05, 5.704) for i in range(41)]), 10.0, 12.0)
    e = per_inference(run, 400, idle.mean_w)
    assert e.energy_mj == pytest.approx(5.704 * 2.0 / 400 * 1000, rel=1e-9)  # 28.52 mJ
    assert e.energy_above_idle_mj == pytest.approx((5.704 - 4.744) * 2.0 / 400 * 1000, rel=1e-9)  # 4.8 mJ
    assert e.power_w == pytest.approx(5.704) and e.idle_w == pytest.approx(4.744)
    assert e.power_samples == 41 and e.interval_ms == pytest.approx(50.0)
    assert per_inference(run, 400).energy_above_idle_mj is None


def test_above_idle_is_not_clamped():
    run = window_power(samples([(0, 4.0), (1, 4.0)]), 0, 1)
    assert per_inference(run, 10, idle_w=4.5).energy_above_idle_mj == pytest.approx(-50.0)


def test_window_outside_the_samples_is_held_and_reported():
    w = window_power(samples([(1, 5.0), (2, 5.0)]), 0.0, 3.0)
    assert w.energy_mj == pytest.approx(15000.0)
    assert w.extrapolated_s == pytest.approx(2.0)
    assert not w.sufficient()


def test_energy_counter_is_preferred_when_present():
    # A 100 W load seen through a cumulative counter, with noisy instantaneous readings.
    s = [PowerSample(t=i * 0.1, module_w=50.0 + 100 * (i % 2), energy_mj=100.0 * i * 0.1 * 1000) for i in range(11)]
    w = window_power(s, 0.25, 0.75)
    assert w.method == "energy-counter"
    assert w.mean_w == pytest.approx(100.0) and w.energy_mj == pytest.approx(50_000.0)


def test_cpu_gpu_quantity():
    s = samples([(0, 5.0), (1, 5.0)], cpu_gpu=[1.0, 2.0])
    assert mean_power_w(s, 0, 1, "cpu_gpu_w") == pytest.approx(1.5)
    with pytest.raises(AdnError):
        window_power(s, 0, 1, "gpu_w")


def test_bad_inputs_are_adn_errors():
    with pytest.raises(AdnError):
        window_power([], 0, 1)
    with pytest.raises(AdnError):
        window_power(samples([(0, 1.0)]), 1, 1)
    with pytest.raises(AdnError):
        integrate_mj([0, 1], [1.0], 0, 1)
    with pytest.raises(AdnError):
        per_inference(window_power(samples([(0, 1.0), (1, 1.0)]), 0, 1), 0)
    with pytest.raises(AdnError):
        min_run_seconds(0)


def test_min_run_seconds():
    assert min_run_seconds(50) == pytest.approx(1.5)  # 20 samples x 50 ms x 1.5 margin
    assert min_run_seconds(20, 30, margin=1.0) == pytest.approx(0.6)


def test_windows_of_interleaved_blocks_combine_by_hand():
    from adn_edge.power.energy import combine_windows

    # P = 5 W on [0, 2], 8 W on [10, 11]: 10 J + 8 J over 3 s -> 6 W mean (not (5 + 8) / 2).
    s = samples([(0, 5), (1, 5), (2, 5), (10, 8), (10.5, 8), (11, 8)])
    a, b = window_power(s, 0, 2), window_power(s, 10, 11)
    both = combine_windows([a, b])
    assert both is not None
    assert both.energy_mj == pytest.approx(18_000) and both.duration_s == pytest.approx(3)
    assert both.mean_w == pytest.approx(6.0) and both.samples == a.samples + b.samples
    assert (both.t0, both.t1) == (0, 11) and both.method == "trapezoid"
    assert per_inference(both, 30).energy_mj == pytest.approx(600)  # 18 J / 30 calls
    assert combine_windows([a]) is a
    assert combine_windows([]) is None and combine_windows([a, None]) is None  # a block without readings
