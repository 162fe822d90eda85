"""A deadline governor for control loops: step shallower when late, deeper when idle.

Bench results say what a sub-network costs on an idle device; a robot's device is
rarely idle (other nodes, thermal throttling, DVFS). The governor watches the
latencies actually observed and walks a *ladder* of sub-networks (shallowest
first; by default the Pareto set from :mod:`adn_edge.runtime.policies`).

It must not flap: a sub-network that fits only just, stepped up to and down from
every few ticks, gives the worst of both. Hence the hysteresis:

* **down fast**: ``down_after`` consecutive ticks above ``high * deadline`` (default
  2 above 90 %) step down, straight to the deepest level predicted to fit;
* **up slowly**: ``up_after`` consecutive ticks below ``low * deadline`` (default 20
  below 60 %) step up one level, and only if that level is predicted to fit;
* **back-off**: a level that had to be left again soon after stepping up to it
  needs twice the patience next time (up to ``max_backoff`` times), until the
  deadline changes;
* the band between ``low`` and ``high`` resets both counters.

Which bench latencies: a control loop sleeps between ticks, and a call after a sleep
is often slower than one of a back-to-back loop (cold caches, a slower clock, a
sleeping thread pool). So when the bench report has a paced loop's figures
(``adn-edge bench --hz N``), :meth:`DeadlineGovernor.for_switcher` builds its ladder
and estimates from those, and from the hot loop's only when there are none
(``latencies=`` forces either; ``estimates_source`` says which were used).

Predictions scale the bench latencies (or, without a benchmark, GMACs) by the
milliseconds per unit the last few inferences took, so they follow the load and
a lowered deadline moves straight to a level that fits instead of stepping
through all of them. Without any estimate, a level's own recent latencies are
used, and an unmeasured (or long unvisited) level is simply tried, the back-off
bounding how often a failed try repeats.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.modeldir.pareto import pareto_front

if TYPE_CHECKING:
    from adn_edge.runtime.policies import Policy
    from adn_edge.runtime.switcher import EngineSwitcher

LATENCIES = ("auto", "paced", "hot")


def paced_latencies(policy: Policy, codes: Sequence[str] | None = None) -> tuple[dict[str, float], float | None]:
    """``({code: paced latency ms}, hz)`` from the bench report ``policy`` read (its
    ``stat``, p99 by default), for the codes the policy has a latency for (a report's
    codes of replaced graphs are not among them); ``({}, None)`` when the report has no
    paced loop (``adn-edge bench --hz N`` adds one). Non-finite or negative figures are
    refused as the report's other numbers are."""
    from adn_edge.modeldir.results import load_bench

    path = policy.sources.get("bench")
    if not path:
        return {}, None
    report = load_bench(Path(path))
    stat = policy.sources.get("stat") or "p99"
    out: dict[str, float] = {}
    hz: float | None = None
    for code, entry in report["subnets"].items():
        paced = entry.get("paced") if isinstance(entry, Mapping) else None
        cand = policy.candidates.get(code)
        if not isinstance(paced, Mapping) or cand is None or cand.latency_ms is None:
            continue
        if codes is not None and code not in codes:
            continue
        value = (paced.get("latency_ms") or {}).get(stat) if isinstance(paced.get("latency_ms"), Mapping) else None
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and value >= 0):
            raise AdnError(f"{path!r} gives subnets[{code!r}].paced.latency_ms.{stat} = {value!r}, which is not a "
                           "non-negative number.", "Re-run `adn-edge bench ... --hz N`.")
        out[code] = float(value)
        rate = paced.get("hz")
        hz = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else hz
    return out, hz


class DeadlineGovernor:
    """Chooses the sub-network for the next tick from observed latencies.

    Use :meth:`for_switcher` and :meth:`infer` in a loop, or feed :meth:`observe`
    with your own timings (then apply the returned code yourself).
    """

    def __init__(self, ladder: Sequence[str], deadline_ms: float, *, switcher: EngineSwitcher | None = None,
                 start: str | None = None, estimates: Mapping[str, float] | None = None,
                 estimates_in_ms: bool = True, window: int = 8, high: float = 0.9, low: float = 0.6,
                 down_after: int = 2, up_after: int = 20, max_backoff: int = 8) -> None:
        if not ladder:
            raise AdnError("A governor needs at least one sub-network on its ladder.")
        if not 0 < low < high <= 1.5:
            raise AdnError(f"Governor thresholds need 0 < low < high <= 1.5 (got low={low}, high={high}).")
        if down_after < 1 or up_after < 1 or window < 1:
            raise AdnError("down_after, up_after and window must be at least 1.")
        self.ladder = list(ladder)
        self.high, self.low = float(high), float(low)
        self.down_after, self.up_after, self.max_backoff = int(down_after), int(up_after), int(max_backoff)
        self.estimates = {c: float(v) for c, v in (estimates or {}).items() if v is not None and v > 0}
        self._initial_scale = 1.0 if estimates_in_ms else None
        self._ratios: deque[float] = deque(maxlen=3)  # observed ms per estimate unit, latest first
        self._switcher = switcher
        self._window = int(window)
        self._history: dict[str, deque[float]] = {c: deque(maxlen=self._window) for c in self.ladder}
        self._level = self.ladder.index(start) if start in self.ladder else len(self.ladder) - 1
        self._deadline = 0.0
        self._tick = 0
        self._over = self._under = 0
        self._last_up: tuple[int, int] | None = None  # (tick, level) of the last step up
        self._backoff: dict[int, int] = {}
        self._seen: dict[str, int] = {}
        self.switches: deque[dict[str, Any]] = deque(maxlen=256)
        self.estimates_source = "given" if self.estimates else "none: observed latencies only"
        """Where the ladder's latency estimates came from (``for_switcher``: paced or hot bench loop, or GMACs)."""
        self.estimates_hz: float | None = None
        """The loop rate of the paced bench figures the estimates are (None: not paced figures)."""
        self.deadline_ms = deadline_ms
        if switcher is not None:
            switcher.switch(self.current)

    @classmethod
    def for_switcher(cls, switcher: EngineSwitcher, deadline_ms: float, *, latencies: str = "auto",
                     **kwargs: Any) -> DeadlineGovernor:
        """A governor over the switcher's Pareto ladder.

        With bench results it starts at the deepest level they say fits and
        predicts from their latencies; without, GMACs serve as relative costs
        (latency roughly follows them), calibrated by the first latencies observed,
        and it starts at the active sub-network.

        ``latencies``: ``auto`` takes the paced loop's figures of the bench report when
        it has them for every sub-network of the ladder (the ladder is then the Pareto
        set of the paced latencies), else the hot loop's; ``paced`` requires them
        (AdnError naming ``adn-edge bench --hz``), ``hot`` ignores them.
        """
        if latencies not in LATENCIES:
            raise AdnError(f"latencies must be one of {', '.join(LATENCIES)}, not {latencies!r}.")
        policy = switcher.policy
        ladder = [c for c in policy.ladder() if c in switcher.codes] or list(reversed(switcher.codes))
        cands = [policy.candidates[c] for c in ladder]
        in_ms = all(c.latency_ms is not None for c in cands)
        estimates = {c.code: (c.latency_ms if in_ms else c.gmacs) for c in cands}
        source = f"bench {policy.sources.get('stat') or 'p99'} (hot loop)" if in_ms else "GMACs, calibrated by observation"
        paced, hz = paced_latencies(policy, switcher.codes) if in_ms and latencies != "hot" else ({}, None)
        measured = [c for c in switcher.codes if policy.candidates[c].latency_ms is not None]
        if paced and all(c in paced for c in measured):
            front = [c for c in pareto_front(paced, policy.quality()) if c in switcher.codes]
            if front:
                ladder = front
                estimates = {c: paced[c] for c in ladder}
                source = f"bench {policy.sources.get('stat') or 'p99'} (paced loop at {hz:g} Hz)" if hz else \
                    "bench (paced loop)"
        elif latencies == "paced":
            raise AdnError(f"The bench report ({policy.sources.get('bench') or 'none'}) has no paced loop for these "
                           "sub-networks, so budgets cannot come from paced latencies.",
                           "Measure them at your loop's rate: `adn-edge bench DIR --device ... --hz N`.")
        start = kwargs.pop("start", None)
        if start is None:
            start = switcher.active
            if in_ms:
                high = kwargs.get("high", 0.9)
                fitting = [c for c in ladder if (estimates[c] or 0.0) <= high * deadline_ms]
                start = fitting[-1] if fitting else ladder[0]
        gov = cls(ladder, deadline_ms, switcher=switcher, start=start, estimates=estimates,
                  estimates_in_ms=in_ms, **kwargs)
        gov.estimates_source = source
        gov.estimates_hz = hz if "paced" in source else None
        return gov

    # ------------------------------------------------------------------ state

    @property
    def current(self) -> str:
        return self.ladder[self._level]

    @property
    def deadline_ms(self) -> float:
        return self._deadline

    @deadline_ms.setter
    def deadline_ms(self, value: float) -> None:
        self.set_deadline(value)

    def set_deadline(self, deadline_ms: float) -> str | None:
        """Change the deadline; steps down at once when the current level is predicted
        not to fit the new one (no need to miss two ticks first). Returns the new
        code when it switched."""
        value = float(deadline_ms)
        if not value > 0:
            raise AdnError(f"The deadline must be positive, not {deadline_ms!r} ms.")
        changed = value != self._deadline
        self._deadline = value
        if not changed:
            return None
        self._over = self._under = 0
        self._backoff.clear()
        predicted = self.predict(self.current)
        if predicted is not None and predicted > self.high * value and self._level > 0:
            return self._go(self._fitting_below(self._level), "deadline lowered")
        return None

    # ------------------------------------------------------------------ logic

    def predict(self, code: str) -> float | None:
        """Expected latency (ms) of ``code`` under the current load, or None if unknown.

        Estimates (bench ms, or any proportional cost such as GMACs) are scaled by
        the ms-per-unit of the last few inferences, so they follow the load. Without
        one, a level's own latencies count only while recent: an old measurement
        under another load must not bar a level forever (the back-off bounds the
        cost of trying it again).
        """
        recent = list(self._history[code])[-3:] if code in self._history else []
        if code == self.current and recent:
            return statistics.median(recent)
        scale = statistics.median(self._ratios) if self._ratios else self._initial_scale
        if code in self.estimates and scale is not None:
            return self.estimates[code] * scale
        hist = self._history.get(code)
        if hist and self._tick - self._seen.get(code, 0) <= self.up_after * self.max_backoff:
            return statistics.median(hist)
        return None

    def _fitting_below(self, level: int) -> int:
        budget = self.high * self._deadline
        for lv in range(level - 1, -1, -1):
            p = self.predict(self.ladder[lv])
            if p is None or p <= budget:
                return lv
        return 0

    def observe(self, latency_ms: float, code: str | None = None) -> str | None:
        """Record one inference's latency; returns the code switched to, if any."""
        self._tick += 1
        if code is not None and code != self.current:
            if code not in self._history:
                return None  # a sub-network off the ladder (a manual switch): not ours to judge
            self._level = self.ladder.index(code)  # someone switched by hand: follow
            self._over = self._under = 0
        self._history[self.current].append(float(latency_ms))
        self._seen[self.current] = self._tick
        if self.current in self.estimates:
            self._ratios.append(float(latency_ms) / self.estimates[self.current])
        if latency_ms > self.high * self._deadline:
            self._over, self._under = self._over + 1, 0
        elif latency_ms < self.low * self._deadline:
            self._over, self._under = 0, self._under + 1
        else:
            self._over = self._under = 0
        if self._over >= self.down_after and self._level > 0:
            if self._last_up is not None and self._last_up[1] == self._level and \
                    self._tick - self._last_up[0] <= self.up_after * self._backoff.get(self._level, 1):
                self._backoff[self._level] = min(2 * self._backoff.get(self._level, 1), self.max_backoff)
            return self._go(self._fitting_below(self._level), "late")
        if self._level + 1 < len(self.ladder) and \
                self._under >= self.up_after * self._backoff.get(self._level + 1, 1):
            predicted = self.predict(self.ladder[self._level + 1])
            self._under = 0
            if predicted is None or predicted <= self.high * self._deadline:
                self._last_up = (self._tick, self._level + 1)
                return self._go(self._level + 1, "slack")
        return None

    def _go(self, level: int, reason: str) -> str | None:
        if level == self._level:
            return None
        before = self.current
        self._level = level
        self._over = self._under = 0
        if self._switcher is not None:
            self._switcher.switch(self.current)
        self.switches.append({"tick": self._tick, "from": before, "to": self.current, "reason": reason,
                              "deadline_ms": self._deadline})
        return self.current

    # ------------------------------------------------------------------ loop helper

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``switcher.infer`` timed and observed (needs a governor made with a switcher)."""
        if self._switcher is None:
            raise AdnError("This governor has no switcher; time inferences yourself and call observe().")
        t0 = time.perf_counter()
        code, out = self._switcher.infer_tagged(batch)
        self.observe((time.perf_counter() - t0) * 1e3, code)
        return out

    def describe(self) -> dict[str, Any]:
        return {"current": self.current, "deadline_ms": self._deadline, "ladder": list(self.ladder),
                "estimates_source": self.estimates_source, "estimates_hz": self.estimates_hz,
                "ticks": self._tick, "switches": len(self.switches), "high": self.high, "low": self.low,
                "recent_ms": {c: round(statistics.median(h), 3) for c, h in self._history.items() if h},
                "backoff": {self.ladder[k]: v for k, v in self._backoff.items()}}
