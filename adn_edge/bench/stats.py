"""Latency statistics from per-iteration wall times.

One function turns the raw timings into everything a report shows, so that the
CSV, the JSON and the terminal table can never disagree. Percentiles use numpy's
default linear interpolation; ``std`` is the sample standard deviation (ddof=1),
because the timed iterations are a sample of the sub-network's latency
distribution, not the distribution itself.

The variation warning follows trtexec, which warns when the coefficient of
variation of GPU compute time exceeds 1%. Host-side timings on a shared CPU are
noisier than CUDA-event timings, so the default threshold here is 5%; pass 0.01 to
be as strict as trtexec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from adn_edge.errors import AdnError

CV_WARN = 0.05
"""Coefficient of variation above which a run is flagged as unstable."""


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one sub-network's timed iterations (milliseconds unless named)."""

    iterations: int
    batch: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float
    """std / mean, as a fraction."""
    total_s: float
    throughput_ips: float
    """Inputs (images) per second: batch x iterations / total time."""
    warning: str | None

    def latency_ms(self) -> dict[str, float]:
        """The report's ``latency_ms`` block (docs/model-directory.md, plus ``std``)."""
        return {"mean": self.mean_ms, "p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms,
                "min": self.min_ms, "max": self.max_ms, "std": self.std_ms}

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def variation_warning(cv: float, threshold: float = CV_WARN) -> str | None:
    """A trtexec-style warning when latency varies too much to trust the mean."""
    if not math.isfinite(cv) or cv <= threshold:
        return None
    return (f"latency is unstable: coefficient of variation {cv * 100:.1f}% (> {threshold * 100:g}%). "
            "Lock clocks (jetson_clocks, nvidia-smi --lock-gpu-clocks), close other programs, "
            "or run more iterations.")


def latency_stats(seconds: Sequence[float], batch: int = 1, cv_threshold: float = CV_WARN) -> LatencyStats:
    """Statistics of per-iteration latencies given in seconds.

    ``batch`` is the number of inputs per iteration, used only for throughput.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise AdnError(f"The batch size must be a positive integer, got {batch!r}.")
    x = np.asarray(list(seconds), dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise AdnError("No timed iterations to summarise.", "Run at least one timed iteration.")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise AdnError("Latency timings must be finite, non-negative seconds.")
    ms = x * 1000.0
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    total = float(x.sum())
    if total <= 0:
        raise AdnError("Every timed iteration took zero seconds: the timer is too coarse.",
                       "Time with time.perf_counter (or CUDA events), not time.time.")
    throughput = batch * x.size / total
    return LatencyStats(iterations=int(x.size), batch=batch, mean_ms=mean, p50_ms=p50, p90_ms=p90, p99_ms=p99,
                        min_ms=float(ms.min()), max_ms=float(ms.max()), std_ms=std, cv=cv, total_s=total,
                        throughput_ips=float(throughput), warning=variation_warning(cv, cv_threshold))
