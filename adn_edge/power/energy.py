"""Energy from stamped power samples: pure arithmetic, no devices.

Power meters print discrete readings; inference runs start and end between them.
Integrating the trapezoids between samples, with the power *interpolated* at the
window edges, makes the energy of a run independent of where its edges fall
relative to the sampling grid (a plain "mean of the samples inside" is biased by
one sample period at each end). Sources with a cumulative energy counter (NVML)
are read by interpolating the counter instead, which also captures what happens
between samples.

Units: samples in watts and seconds; energies returned in millijoules, because
per-inference energies on a Jetson are a few to a few hundred mJ.

Per-inference energy over a run of ``N`` inferences lasting ``t_run``::

    total      = mean_P_run * t_run / N
    above idle = (mean_P_run - P_idle) * t_run / N

"Above idle" can come out slightly negative when the model barely loads the
device; it is reported as measured, not clamped, so that noise stays visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from adn_edge.errors import AdnError

@dataclass(frozen=True, slots=True)
class PowerSample:
    """One reading, stamped with :func:`time.perf_counter` when it reached us.

    Boards print at most a second-resolution date, so the arrival time is the only
    clock that can be aligned with inference runs. ``module_w`` is the whole module
    (or board) input, ``cpu_gpu_w`` the rail(s) that carry CPU and GPU when the board
    has them; which rails those are is the source's ``describe()``, not the sample's,
    because it is fixed per board. ``energy_mj`` is a cumulative energy counter when
    the source has one (NVML), which integrates better than sampled power.
    """

    t: float
    module_w: float | None
    cpu_gpu_w: float | None = None
    rails_w: Mapping[str, float] = field(default_factory=dict)
    energy_mj: float | None = None


MIN_RUN_SAMPLES = 20
"""Fewer samples than this inside a run and its mean power is not trustworthy."""

_QUANTITIES = ("module_w", "cpu_gpu_w")


@dataclass(frozen=True)
class WindowPower:
    """Power over one time window, with what a reader needs to judge it."""

    t0: float
    t1: float
    duration_s: float
    energy_mj: float
    mean_w: float
    samples: int
    """Samples stamped inside ``[t0, t1]``."""
    interval_ms: float | None
    """Median spacing of the samples used (None with fewer than two)."""
    method: str
    """``trapezoid`` (sampled power) or ``energy-counter``."""
    extrapolated_s: float
    """Seconds of the window not bracketed by samples (power held constant there)."""

    def sufficient(self, min_samples: int = MIN_RUN_SAMPLES) -> bool:
        return self.samples >= min_samples and self.extrapolated_s <= 0.05 * self.duration_s


@dataclass(frozen=True)
class InferenceEnergy:
    """Per-inference energy of one run."""

    inferences: int
    run_s: float
    power_w: float
    """Mean module power during the run."""
    energy_mj: float
    """Total energy per inference (idle included)."""
    energy_above_idle_mj: float | None
    idle_w: float | None
    power_samples: int
    interval_ms: float | None
    method: str


def integrate_mj(times: ArrayLike, watts: ArrayLike, t0: float, t1: float) -> tuple[float, float]:
    """Trapezoidal energy of ``watts(times)`` over ``[t0, t1]`` in mJ.

    Power at the window edges is linearly interpolated between the neighbouring
    samples; outside the sampled span it is held at the first/last value. Returns
    ``(energy_mj, extrapolated_s)`` so the caller can tell how much was held.
    """
    t = np.asarray(times, dtype=np.float64)
    p = np.asarray(watts, dtype=np.float64)
    if t.ndim != 1 or t.shape != p.shape:
        raise AdnError("Power samples need one timestamp per reading.")
    if t.size == 0:
        raise AdnError("No power samples to integrate.",
                       "Run longer, or sample more often (e.g. an interval of 50 ms).")
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise AdnError(f"The energy window must end after it starts (got {t0!r} to {t1!r}).")
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    inside = (t > t0) & (t < t1)
    edges = np.interp([t0, t1], t, p)  # np.interp holds the end values outside the span
    xs = np.concatenate(([t0], t[inside], [t1]))
    ys = np.concatenate(([edges[0]], p[inside], [edges[1]]))
    energy_j = float(np.sum((ys[1:] + ys[:-1]) * 0.5 * np.diff(xs)))
    extrapolated = max(0.0, min(t1, t[0]) - t0) + max(0.0, t1 - max(t0, t[-1]))
    return energy_j * 1000.0, float(extrapolated)


def _counter_mj(times: np.ndarray, counter: np.ndarray, t0: float, t1: float) -> float | None:
    """Energy from a cumulative counter, or None when the counter does not bracket the window."""
    if times.size < 2 or times[0] > t0 or times[-1] < t1:
        return None
    e0, e1 = np.interp([t0, t1], times, counter)
    return float(e1 - e0)


def window_power(samples: Sequence[PowerSample], t0: float, t1: float, quantity: str = "module_w") -> WindowPower:
    """Energy and mean power of ``quantity`` (``module_w`` or ``cpu_gpu_w``) over ``[t0, t1]``.

    Uses the energy counter when every sample carries one and it brackets the window
    (module power only), else trapezoids over sampled power.
    """
    if quantity not in _QUANTITIES:
        raise AdnError(f"{quantity!r} is not a power quantity; use one of {', '.join(_QUANTITIES)}.")
    usable = [s for s in samples if getattr(s, quantity) is not None and math.isfinite(getattr(s, quantity))]
    if not usable:
        raise AdnError(f"No power samples ({quantity}) were recorded between the start and end of the run.",
                       "Check that the power source is running, or run longer.")
    usable.sort(key=lambda s: s.t)
    times = np.array([s.t for s in usable], dtype=np.float64)
    duration = t1 - t0
    n_inside = int(np.count_nonzero((times >= t0) & (times <= t1)))
    near = times[(times >= t0) & (times <= t1)]
    if near.size < 2:
        # Too few inside: judge the spacing from the samples that bracket the window.
        lo = max(0, int(np.searchsorted(times, t0)) - 1)
        hi = min(times.size, int(np.searchsorted(times, t1, side="right")) + 1)
        near = times[lo:hi]
    interval_ms = float(np.median(np.diff(near)) * 1000.0) if near.size >= 2 else None

    method = "trapezoid"
    energy_mj: float | None = None
    extrapolated = 0.0
    if quantity == "module_w" and all(s.energy_mj is not None for s in usable):
        counter = np.array([s.energy_mj for s in usable], dtype=np.float64)
        energy_mj = _counter_mj(times, counter, t0, t1)
        if energy_mj is not None:
            method = "energy-counter"
    if energy_mj is None:
        watts = np.array([getattr(s, quantity) for s in usable], dtype=np.float64)
        energy_mj, extrapolated = integrate_mj(times, watts, t0, t1)
    mean_w = energy_mj / 1000.0 / duration
    return WindowPower(t0=t0, t1=t1, duration_s=duration, energy_mj=energy_mj, mean_w=mean_w,
                       samples=n_inside, interval_ms=interval_ms, method=method, extrapolated_s=extrapolated)


def combine_windows(windows: Sequence[WindowPower | None]) -> WindowPower | None:
    """One sub-network's power over the several blocks it ran in (an interleaved bench
    with a power meter): energies and durations add up, the mean power is their ratio.
    None when there is no window or any block had no reading (a meter that measures
    nothing); one window is returned as it is."""
    if not windows or any(w is None for w in windows):
        return None
    ws = [w for w in windows if w is not None]
    if len(ws) == 1:
        return ws[0]
    duration = sum(w.duration_s for w in ws)
    energy = sum(w.energy_mj for w in ws)
    intervals = [w.interval_ms for w in ws if w.interval_ms is not None]
    methods = {w.method for w in ws}
    return WindowPower(t0=min(w.t0 for w in ws), t1=max(w.t1 for w in ws), duration_s=duration, energy_mj=energy,
                       mean_w=energy / 1000.0 / duration, samples=sum(w.samples for w in ws),
                       interval_ms=float(np.median(intervals)) if intervals else None,
                       method=methods.pop() if len(methods) == 1 else "mixed",
                       extrapolated_s=sum(w.extrapolated_s for w in ws))


def mean_power_w(samples: Sequence[PowerSample], t0: float, t1: float, quantity: str = "module_w") -> float:
    """Time-weighted mean power over ``[t0, t1]`` (not the mean of the readings)."""
    return window_power(samples, t0, t1, quantity).mean_w


def idle_baseline(samples: Sequence[PowerSample], t0: float, t1: float) -> WindowPower:
    """Module power with nothing running, measured over ``[t0, t1]`` before the runs.

    The same integration as a run, so that subtracting one from the other cancels
    the meter's own biases (sensor averaging, edge effects).
    """
    return window_power(samples, t0, t1, "module_w")


def per_inference(run: WindowPower, inferences: int, idle_w: float | None = None) -> InferenceEnergy:
    """Per-inference energy of a run of ``inferences`` calls (mJ).

    ``inferences`` is what the caller counts as one inference: timed iterations for
    per-batch energy, or iterations x batch for per-image energy.
    """
    if isinstance(inferences, bool) or not isinstance(inferences, int) or inferences < 1:
        raise AdnError(f"The number of inferences must be a positive integer, got {inferences!r}.")
    total = run.mean_w * run.duration_s / inferences * 1000.0
    above = None if idle_w is None else (run.mean_w - idle_w) * run.duration_s / inferences * 1000.0
    return InferenceEnergy(inferences=inferences, run_s=run.duration_s, power_w=run.mean_w, energy_mj=total,
                           energy_above_idle_mj=above, idle_w=idle_w, power_samples=run.samples,
                           interval_ms=run.interval_ms, method=run.method)


def min_run_seconds(interval_ms: float, min_samples: int = MIN_RUN_SAMPLES, *, margin: float = 1.5) -> float:
    """How long a run must last to collect ``min_samples`` readings at ``interval_ms``.

    Boards deliver lines slower than asked (a 5 ms request gives ~20 ms), hence the
    margin; the harness extends short runs to at least this.
    """
    if not interval_ms > 0:
        raise AdnError(f"The power sampling interval must be positive, got {interval_ms!r} ms.")
    return min_samples * interval_ms / 1000.0 * margin
