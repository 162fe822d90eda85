"""The one Pareto rule: which sub-networks are worth running at all.

A sub-network is worth choosing only if no other is at least as cheap in every cost
(latency, energy) and at least as accurate, and strictly better in one. Plots
(:mod:`adn_edge.bench.pareto`), the runtime's policies
(:class:`adn_edge.runtime.Policy`) and the demo all call :func:`pareto_front`, so a
plot never highlights a sub-network that ``fastest_within`` would not choose.

Latency statistic: :data:`LATENCY_STAT` (``p99``) everywhere by default. A robot's
budget is a deadline, and a deadline is broken by the slow inferences, not the
typical one; ranking by the mean (as plots once did) can call a sub-network optimal
whose tail misses the budget the policy checks against. Callers may ask for another
statistic explicitly (``Policy.from_directory(stat=...)``, ``plot(stat=...)``).

When accuracy is unknown, GMACs stand in for it: in an ADN a sub-network that runs
more blocks is the more accurate one, so the ordering is the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LATENCY_STAT = "p99"
LATENCY_STATS = ("mean", "p50", "p90", "p99", "min", "max")


def _finite(values: Sequence[float | None]) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


def pareto_front(costs: Mapping[str, float | Sequence[float | None] | None],
                 quality: Mapping[str, float | None]) -> list[str]:
    """Codes not dominated in (costs..., quality), cheapest first (then best, then code).

    ``costs`` maps a code to one cost or a sequence of costs (all minimised);
    ``quality`` (accuracy or GMACs) is maximised. Codes lacking a finite cost or
    quality are left out. Identical points do not dominate each other: both stay.
    """
    points: dict[str, tuple[float, ...]] = {}
    for code, c in costs.items():
        vec = (c,) if c is None or isinstance(c, (int, float)) else tuple(c)
        q = quality.get(code)
        if _finite(vec) and q is not None and math.isfinite(float(q)):
            points[code] = tuple(float(v) for v in vec)  # type: ignore[arg-type]
    qual = {c: float(quality[c]) for c in points}  # type: ignore[arg-type]

    def dominates(a: str, b: str) -> bool:
        ca, cb = points[a], points[b]
        no_worse = all(x <= y for x, y in zip(ca, cb, strict=True)) and qual[a] >= qual[b]
        better = any(x < y for x, y in zip(ca, cb, strict=True)) or qual[a] > qual[b]
        return no_worse and better

    keep = [b for b in points if not any(dominates(a, b) for a in points if a != b)]
    return sorted(keep, key=lambda c: (*points[c], -qual[c], c))


def latency(entry: Mapping[str, Any], stat: str = LATENCY_STAT) -> float | None:
    """``stat`` of a bench entry's ``latency_ms`` (the mean when a report lacks it; a
    bare number is taken as is); None when not measured."""
    lat = entry.get("latency_ms")
    if isinstance(lat, Mapping):
        value = lat.get(stat, lat.get("mean"))
        return None if value is None else float(value)
    return float(lat) if isinstance(lat, (int, float)) else None
