"""One interface for every power meter, and the table that picks one.

The bench harness must not care whether watts come from ``tegrastats`` on a Jetson,
NVML on a desktop GPU, or nowhere at all: it starts a source, stamps the edges of
each run with :func:`time.perf_counter` (the clock every sample is stamped with),
and asks for the power inside that window. Keeping the clock and the integration
rules here, once, is what makes numbers from different boards comparable.

Readings are checked for plausibility before they become samples: a meter that
prints ``VDD_IN 1000000000mW`` would otherwise put a megawatt into the report. An
implausible reading is dropped and counted (:meth:`PowerSource._reject`); a few are
tolerated (one corrupt line must not cost a ten-minute run), but when more than
:data:`MAX_REJECTED_FRACTION` of the readings are rejected the numbers are not
trusted and the run fails with :class:`PowerSourceError` (:func:`rejection_error`).

Nothing here imports torch, numpy-heavy code or a vendor library: sources import
their own dependencies lazily, so that ``--power none`` needs nothing.
"""

from __future__ import annotations

import abc
import importlib
import threading
import time
from types import TracebackType
from typing import Any, ClassVar

from adn_edge.errors import AdnError, AdnProblem, PowerSourceError
from adn_edge.power.energy import PowerSample, WindowPower, window_power

POWER_CHOICES = ("auto", "tegrastats", "nvml", "none")
DEVICE_CHOICES = ("orin", "cuda", "cpu")
_AUTO = {"orin": "tegrastats", "cuda": "nvml", "cpu": "none"}
_FACTORIES = {
    "tegrastats": "adn_edge.power.tegrastats:TegrastatsSource",
    "nvml": "adn_edge.power.nvml:NvmlSource",
    "none": "adn_edge.power.none:NoPowerSource",
}

MAX_REJECTED_FRACTION = 0.1
"""More rejected readings than this share of all readings fails the run."""
MIN_REJECTED_TO_FAIL = 3
"""Below this many rejections a run never fails (a glitch at the very start would
otherwise be 50 % of two readings)."""
MAX_REJECTION_EXAMPLES = 5


def rejection_error(source: str, rejected: int, accepted: int, examples: list[str]) -> PowerSourceError:
    """The error of a run whose meter gave too many implausible (or over-long) readings."""
    total = rejected + accepted
    pct = 100.0 * rejected / total if total else 100.0
    shown = "; ".join(examples[:3])
    return PowerSourceError(
        f"{source} gave {rejected} implausible or over-long readings out of {total} ({pct:.0f} %, more than the "
        f"{MAX_REJECTED_FRACTION:.0%} tolerated), so its energy figures cannot be trusted"
        + (f"; first: {shown}." if shown else "."),
        "Run the meter by hand and check its output (a failing sensor or driver prints such values), "
        "or use --power none to measure latency only.")


class PowerSource(abc.ABC):
    """Samples power in the background between :meth:`start` and :meth:`stop`.

    Use as a context manager so that a subprocess or thread never outlives an
    exception or Ctrl-C. ``samples`` may be read at any time (a snapshot copy).
    """

    name: ClassVar[str] = "?"
    measures_energy: ClassVar[bool] = True

    def __init__(self, interval_ms: float | None = None) -> None:
        if interval_ms is not None and not (interval_ms > 0):
            raise AdnError(f"The power sampling interval must be positive, got {interval_ms!r} ms.",
                           "Use 10-100 ms (50 is a good default).")
        self.interval_ms = interval_ms
        self._samples: list[PowerSample] = []
        self._cond = threading.Condition()
        self._running = False
        self.rejected = 0
        """Readings dropped as implausible (or, for tegrastats, lines too long to be one)."""
        self.rejections: list[str] = []
        """Why, for the first few (the report shows them)."""

    # -- subclass API ------------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """Begin sampling; returns once the first sample has arrived (or raises)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop sampling and release everything. Idempotent."""

    def check(self) -> None:
        """Raise :class:`PowerSourceError` if the meter died while it should be running."""

    def describe(self) -> dict[str, Any]:
        """What a report needs to judge the numbers: source, rail, interval, notes."""
        return {"source": self.name, "rail": None, "interval_ms": self.interval_ms}

    def _add(self, sample: PowerSample) -> None:
        with self._cond:
            self._samples.append(sample)
            self._cond.notify_all()

    def _reject(self, reason: str) -> None:
        """Drop a reading that cannot be true, and remember why (the first few)."""
        with self._cond:
            self.rejected += 1
            if len(self.rejections) < MAX_REJECTION_EXAMPLES:
                self.rejections.append(reason)
            self._cond.notify_all()

    def _check_rejections(self) -> None:
        """Raise :func:`rejection_error` once too large a share of the readings was rejected."""
        with self._cond:
            rejected, accepted, examples = self.rejected, len(self._samples), list(self.rejections)
        if rejected >= MIN_REJECTED_TO_FAIL and rejected > MAX_REJECTED_FRACTION * (rejected + accepted):
            raise rejection_error(self.name, rejected, accepted, examples)

    # -- shared behaviour -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    @property
    def samples(self) -> list[PowerSample]:
        with self._cond:
            return list(self._samples)

    @staticmethod
    def now() -> float:
        """The clock samples are stamped with; stamp window edges with this."""
        return time.perf_counter()

    def wait_until(self, t: float, timeout_s: float | None = None) -> bool:
        """Block until a sample stamped at or after ``t`` exists, so that a window ending
        at ``t`` can be interpolated instead of extrapolated. False on timeout."""
        if not self.measures_energy:
            return True
        if timeout_s is None:
            timeout_s = 2.0 + 5 * (self.interval_ms or 50) / 1000
        deadline = time.perf_counter() + timeout_s
        with self._cond:
            while not (self._samples and self._samples[-1].t >= t):
                left = deadline - time.perf_counter()
                if left <= 0 or not self._running:
                    break
                self._cond.wait(min(left, 0.1))
            ok = bool(self._samples) and self._samples[-1].t >= t
        if not ok:
            self.check()
        return ok

    def window(self, t0: float, t1: float, *, wait: bool = True, quantity: str = "module_w") -> WindowPower | None:
        """Power over ``[t0, t1]`` (see :func:`adn_edge.power.energy.window_power`);
        None when this source measures nothing."""
        if not self.measures_energy:
            return None
        if wait:
            self.wait_until(t1)
        self._check_rejections()  # a window over mostly-rejected readings is no measurement
        return window_power(self.samples, t0, t1, quantity=quantity)

    def __enter__(self) -> PowerSource:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.stop()
            return
        # Never let a cleanup complaint hide the exception (or Ctrl-C) that got us here.
        try:
            self.stop()
        except AdnProblem:
            pass


def resolve_power(power: str = "auto", device: str = "cpu") -> str:
    """The concrete source for ``--power`` given ``--device``.

    ``auto`` follows the device (orin -> tegrastats, cuda -> nvml, cpu -> none); an
    explicit choice always wins, so ``--device cpu --power tegrastats`` uses whatever
    ``tegrastats`` is on PATH (how tests drive it, and how a Jetson CPU run is metered).
    """
    p = str(power).strip().lower()
    d = str(device).strip().lower()
    if p not in POWER_CHOICES:
        raise AdnError(f"{power!r} is not a power source.",
                       f"Use --power with one of: {', '.join(POWER_CHOICES)}.")
    if d not in DEVICE_CHOICES:
        raise AdnError(f"{device!r} is not a device kind.",
                       f"Use --device with one of: {', '.join(DEVICE_CHOICES)}.")
    return _AUTO[d] if p == "auto" else p


def power_source(name: str, **opts: Any) -> PowerSource:
    """Construct the source ``name`` (``tegrastats``, ``nvml`` or ``none``).

    Options go to its constructor (``interval_ms`` for all that sample). Construction
    checks availability (tool on PATH, library importable), so a missing meter is
    reported before any model is loaded. ``auto`` must be resolved first with
    :func:`resolve_power`, because only the caller knows the device.
    """
    key = str(name).strip().lower()
    if key == "auto":
        raise AdnError("power_source('auto') needs a device to resolve against.",
                       "Call resolve_power(power, device) first and pass its result.")
    if key not in _FACTORIES:
        raise AdnError(f"{name!r} is not a power source.",
                       f"Use one of: {', '.join(_FACTORIES)}.")
    module, cls = _FACTORIES[key].split(":")
    factory = getattr(importlib.import_module(module), cls)
    source: PowerSource = factory(**opts)
    return source
