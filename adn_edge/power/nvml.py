"""GPU board power from NVML (``nvidia-ml-py``, imported as ``pynvml``), kept thin.

The total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the
driver loaded, Volta and newer) is preferred: it integrates in the driver between
our reads, whereas ``nvmlDeviceGetPowerUsage`` is a single reading that recent GPUs
already average over up to a second. Either way a thread polls every
``interval_ms`` and stamps each reading with :func:`time.perf_counter`.

What is measured is the whole graphics board as NVML reports it, not the host CPU,
so ``rail`` says ``nvml_board``. Readings are checked before they become samples,
as tegrastats' are (:mod:`adn_edge.power.base`): a power that is negative or above
twice the board's enforced power limit (:data:`FALLBACK_MAX_W` when NVML does not
say), or an energy counter that runs backwards, is dropped and counted. ``pynvml``
is imported only when this source is built, so the rest of the package never needs it.
"""

from __future__ import annotations

import importlib
import threading
import time
from types import ModuleType
from typing import Any, ClassVar

from adn_edge.errors import AdnError, PowerSourceError
from adn_edge.power.base import PowerSource
from adn_edge.power.energy import PowerSample

FALLBACK_MAX_W = 2000.0
"""Plausibility bound when the GPU reports no power limit: above any single board's."""

INSTALL_HINT = ("Install it with `pip install nvidia-ml-py` (imported as pynvml), or use --power none "
                "to measure latency only.")


def import_pynvml() -> ModuleType:
    """``pynvml`` or an :class:`AdnError` saying how to get it."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise AdnError("--power nvml needs the NVIDIA Management Library bindings (nvidia-ml-py), "
                       "which are not installed.", INSTALL_HINT) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource(PowerSource):
    """Samples one GPU's board power (or energy counter) in a background thread.

    ``use_counter``: None picks the counter when the GPU supports it; False forces
    power sampling. ``pynvml`` may be injected (tests pass a fake module).
    """

    name: ClassVar[str] = "nvml"

    def __init__(self, interval_ms: float | None = 50, index: int = 0, *, use_counter: bool | None = None,
                 pynvml: ModuleType | None = None) -> None:
        super().__init__(50 if interval_ms is None else interval_ms)
        self.nv = pynvml if pynvml is not None else import_pynvml()
        self.index = index
        try:
            self.nv.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError subclasses vary by version
            raise AdnError(f"NVML could not start ({exc}): no NVIDIA driver or GPU is visible.",
                           "Check `nvidia-smi`, or use --power none (or --device cpu).") from None
        self._initialised = True
        try:
            count = int(self.nv.nvmlDeviceGetCount())
            if not 0 <= index < count:
                raise AdnError(f"GPU index {index} does not exist: NVML sees {count} GPU(s).",
                               "Choose an index from `nvidia-smi -L`.")
            self.handle = self.nv.nvmlDeviceGetHandleByIndex(index)
            self.gpu_name = _text(self.nv.nvmlDeviceGetName(self.handle))
            self.use_counter = self._counter_supported() if use_counter is None else use_counter
            self.max_w = self._plausible_max_w()
        except BaseException:
            self._shutdown_nvml()
            raise
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _counter_supported(self) -> bool:
        try:
            self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            return True
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends
            return False

    def _plausible_max_w(self) -> float:
        """Twice the enforced power limit: boards overshoot it briefly, never by 2x."""
        try:
            limit_mw = float(self.nv.nvmlDeviceGetEnforcedPowerLimit(self.handle))
        except Exception:  # noqa: BLE001 - not supported, or a binding without it
            return FALLBACK_MAX_W
        return 2 * limit_mw / 1000.0 if limit_mw > 0 else FALLBACK_MAX_W

    def _implausible(self, sample: PowerSample, prev: PowerSample | None) -> str | None:
        """Why ``sample`` cannot be a real reading (None: it can)."""
        if sample.energy_mj is not None and prev is not None and prev.energy_mj is not None \
                and sample.energy_mj < prev.energy_mj:
            return f"the energy counter ran backwards ({prev.energy_mj:.0f} -> {sample.energy_mj:.0f} mJ)"
        w = sample.module_w
        if w is None or not (0.0 <= w <= self.max_w):  # also refuses NaN
            return f"{w} W is outside 0..{self.max_w:.0f} W for {self.gpu_name}"
        return None

    def _read(self, t: float, prev: PowerSample | None) -> PowerSample:
        if self.use_counter:
            energy = float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))
            if prev is not None and prev.energy_mj is not None and t > prev.t:
                watts = (energy - prev.energy_mj) / 1000.0 / (t - prev.t)
            else:
                watts = float(self.nv.nvmlDeviceGetPowerUsage(self.handle)) / 1000.0
            return PowerSample(t=t, module_w=watts, energy_mj=energy)
        return PowerSample(t=t, module_w=float(self.nv.nvmlDeviceGetPowerUsage(self.handle)) / 1000.0)

    def _loop(self) -> None:
        period = float(self.interval_ms or 50) / 1000.0
        prev: PowerSample | None = None
        try:
            while True:
                t = time.perf_counter()
                sample = self._read(t, prev)
                why = self._implausible(sample, prev)
                if why is None:
                    self._add(sample)
                    prev = sample
                else:
                    self._reject(why)
                if self._stop.wait(max(0.0, period - (time.perf_counter() - t))):
                    break
        except Exception as exc:  # noqa: BLE001 - surfaced by check()/stop()
            self._error = exc
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            return
        if not self._initialised:  # restarted after stop()
            self.nv.nvmlInit()
            self._initialised = True
            self.handle = self.nv.nvmlDeviceGetHandleByIndex(self.index)
        self._stop.clear()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="nvml-power", daemon=True)
        self._thread.start()
        deadline = time.perf_counter() + 2.0
        with self._cond:
            while not self._samples and self._running and time.perf_counter() < deadline:
                self._cond.wait(0.05)
        self.check()

    def check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise PowerSourceError(f"Reading GPU power through NVML failed: {err}.",
                                   "Use --power none to measure latency only.")
        self._check_rejections()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._running = False
        self._shutdown_nvml()
        self.check()

    def _shutdown_nvml(self) -> None:
        if getattr(self, "_initialised", False):
            self._initialised = False
            try:
                self.nv.nvmlShutdown()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass

    def describe(self) -> dict[str, Any]:
        return {"source": "nvml", "rail": "nvml_board", "interval_ms": self.interval_ms,
                "method": "energy-counter" if self.use_counter else "power-sampling",
                "gpu": self.gpu_name, "gpu_index": self.index, "plausible_max_w": self.max_w,
                "rejected_samples": self.rejected, "rejections": list(self.rejections),
                "notes": ["power of the whole GPU board as reported by NVML; host CPU not included"]}
