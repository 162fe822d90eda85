"""DeadlineGovernor: reacts fast to lateness, slowly to slack, and does not flap."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from adn_edge.errors import AdnError
from adn_edge.runtime import DeadlineGovernor, EngineSwitcher
from tests.runtime._helpers import bench_report

LADDER = ["0000", "0101", "1011", "1111"]
COST = {"0000": 4.0, "0101": 6.0, "1011": 8.0, "1111": 10.0}  # ms on an idle device


def simulate(gov: DeadlineGovernor, ticks: int, load: float = 1.0, jitter: float = 0.0, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    trace = []
    for _ in range(ticks):
        code = gov.current
        trace.append(code)
        gov.observe(COST[code] * load * (1 + jitter * rng.standard_normal()), code)
    return trace


def test_steps_down_within_two_late_ticks():
    gov = DeadlineGovernor(LADDER, deadline_ms=20.0)
    assert gov.current == "1111"
    simulate(gov, 5)
    assert gov.current == "1111"
    gov.observe(19.0, "1111")
    assert gov.current == "1111"
    assert gov.observe(19.5, "1111") is not None  # second late tick: down
    assert gov.current != "1111"


def test_jumps_to_the_deepest_level_predicted_to_fit():
    gov = DeadlineGovernor(LADDER, deadline_ms=12.0, estimates=COST)
    simulate(gov, 3, load=1.0)
    assert gov.current == "1111"
    simulate(gov, 2, load=2.0)  # the device is suddenly twice as slow: 1111 takes 20 ms
    # predicted under 2x load: 1011 -> 16, 0101 -> 12, 0000 -> 8 ms: only 0000 fits 0.9 * 12
    assert gov.current == "0000"
    assert [s["to"] for s in gov.switches] == ["0000"]


def test_lowering_the_deadline_steps_down_at_once():
    gov = DeadlineGovernor(LADDER, deadline_ms=30.0, estimates=COST)
    simulate(gov, 5)
    assert gov.current == "1111"
    assert gov.set_deadline(6.0) == "0000"  # 0000 at 4 ms is the only one under 0.9 * 6 ms
    assert gov.switches[-1]["reason"] == "deadline lowered"


def test_steps_up_only_after_sustained_slack():
    gov = DeadlineGovernor(LADDER, deadline_ms=5.0, start="0000", up_after=20)
    simulate(gov, 10)
    gov.deadline_ms = 100.0
    trace = simulate(gov, 19)
    assert set(trace) == {"0000"}
    simulate(gov, 1)
    assert gov.current == "0101"
    simulate(gov, 200)
    assert gov.current == "1111"


def test_no_flapping_at_the_edge():
    """1111 runs at 95 % of the deadline (late, by the 90 % threshold) and 1011 at 76 %
    (in the dead band): the governor must settle, not bounce between them."""
    gov = DeadlineGovernor(LADDER, deadline_ms=10.0 / 0.95, low=0.7)
    trace = simulate(gov, 2000, jitter=0.01)
    flips = sum(a != b for a, b in zip(trace, trace[1:], strict=False))
    assert flips <= 2
    assert trace[-1] == "1011"


def test_backoff_limits_retries_of_a_level_that_does_not_fit():
    """1011 looks slack (below 75 %) but 1111 is late (above 90 %), and without bench
    numbers nothing predicts it: the governor may try 1111 again now and then (the
    load could have changed), but each failure doubles its patience, so over 5000
    ticks it tries a handful of times instead of every 12 ticks."""
    gov = DeadlineGovernor(LADDER, deadline_ms=10.0 / 0.92, low=0.75, up_after=10, max_backoff=64, start="1011")
    trace = simulate(gov, 5000)
    ups = sum(1 for a, b in zip(trace, trace[1:], strict=False) if (a, b) == ("1011", "1111"))
    assert 2 <= ups <= 12
    assert gov.describe()["backoff"]["1111"] >= 4
    late = sum(1 for c in trace if c == "1111")
    assert late <= 3 * ups


def test_bad_arguments():
    with pytest.raises(AdnError):
        DeadlineGovernor([], 10.0)
    with pytest.raises(AdnError):
        DeadlineGovernor(LADDER, 10.0, low=0.9, high=0.5)
    with pytest.raises(AdnError, match="deadline must be positive"):
        DeadlineGovernor(LADDER, 0.0)
    with pytest.raises(AdnError, match="no switcher"):
        DeadlineGovernor(LADDER, 10.0).infer(np.zeros((1, 3, 32, 32), np.float32))


def test_for_switcher_uses_bench_ladder(model_dir, tmp_path, inputs):
    d = tmp_path / "d"
    shutil.copytree(model_dir, d, ignore=shutil.ignore_patterns("*seg*"))
    bench = bench_report(COST)  # p99 = the cost
    (d / "bench-cpu.json").write_text(json.dumps(bench))
    with EngineSwitcher.open(d, subnets=LADDER, threads=1, segmented=False) as sw:
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=8.5)
        assert gov.ladder == LADDER
        assert gov.current == "0101" and sw.active == "0101"  # 1011 (8 ms) > 0.9 * 8.5
        out = gov.infer(inputs[0])
        assert out.shape == (1, 10) and gov.describe()["ticks"] == 1
        sw.switch("1111")  # a manual switch is followed, not fought
        gov.infer(inputs[0])
        assert gov.current == "1111"


def test_relative_costs_are_calibrated_by_observation():
    """Without a benchmark, GMACs (any proportional cost) stand in once one latency is seen."""
    gmacs = {c: v * 0.37 for c, v in COST.items()}
    gov = DeadlineGovernor(LADDER, deadline_ms=30.0, estimates=gmacs, estimates_in_ms=False)
    assert gov.predict("0000") is None
    simulate(gov, 3)
    assert gov.predict("0000") == pytest.approx(4.0)
    assert gov.set_deadline(6.0) == "0000"


def test_for_switcher_without_bench_uses_gmacs(model_dir):
    with EngineSwitcher.open(model_dir, subnets=LADDER, threads=1) as sw:
        sw.switch("1011")
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=1000.0)
        assert gov.current == "1011" and gov.ladder == LADDER  # GMACs order
        assert gov.estimates["1111"] > gov.estimates["0000"]
