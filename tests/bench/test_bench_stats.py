"""Latency statistics against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adn_edge.bench.stats import latency_stats, variation_warning
from adn_edge.errors import AdnError


def test_matches_numpy():
    rng = np.random.default_rng(0)
    sec = rng.gamma(4.0, 0.002, size=500)
    s = latency_stats(sec.tolist(), batch=4)
    ms = sec * 1000
    assert s.iterations == 500 and s.batch == 4
    assert s.mean_ms == pytest.approx(ms.mean())
    for q, v in ((50, s.p50_ms), (90, s.p90_ms), (99, s.p99_ms)):
        assert v == pytest.approx(np.percentile(ms, q))
    assert s.min_ms == pytest.approx(ms.min()) and s.max_ms == pytest.approx(ms.max())
    assert s.std_ms == pytest.approx(ms.std(ddof=1))
    assert s.cv == pytest.approx(ms.std(ddof=1) / ms.mean())
    assert s.throughput_ips == pytest.approx(4 * 500 / sec.sum())
    assert s.total_s == pytest.approx(sec.sum())


def test_contract_block_has_the_six_keys_plus_std():
    s = latency_stats([0.001, 0.002, 0.003])
    assert set(s.latency_ms()) == {"mean", "p50", "p90", "p99", "min", "max", "std"}
    assert s.latency_ms()["p50"] == pytest.approx(2.0)


def test_single_iteration():
    s = latency_stats([0.004])
    assert s.std_ms == 0.0 and s.cv == 0.0 and s.p99_ms == pytest.approx(4.0) and s.warning is None


def test_high_variation_warns_like_trtexec():
    steady = latency_stats([0.010] * 99 + [0.0101])
    noisy = latency_stats([0.010] * 90 + [0.030] * 10)
    assert steady.warning is None
    assert noisy.warning is not None and "coefficient of variation" in noisy.warning
    assert latency_stats([0.010, 0.0103], cv_threshold=0.01).warning is not None
    assert variation_warning(0.02, threshold=0.05) is None


@pytest.mark.parametrize("bad", [[], [0.1, -0.1], [float("nan")], [float("inf")], [0.0, 0.0]])
def test_bad_timings(bad):
    with pytest.raises(AdnError):
        latency_stats(bad)


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_bad_batch(batch):
    with pytest.raises(AdnError):
        latency_stats([0.1], batch=batch)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=10.0), min_size=1, max_size=300))
def test_percentiles_ordered_and_equal_to_numpy(sec):
    s = latency_stats(sec)
    ms = np.asarray(sec) * 1000
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.min_ms - 1e-9 <= s.mean_ms <= s.max_ms + 1e-9
    assert s.p90_ms == pytest.approx(np.percentile(ms, 90))
