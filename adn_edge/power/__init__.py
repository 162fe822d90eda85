"""Power meters for the bench: one interface over tegrastats, NVML and nothing.

Typical use (the bench harness)::

    from adn_edge.power import power_source, resolve_power, idle_baseline, per_inference

    with power_source(resolve_power("auto", "orin"), interval_ms=50) as src:
        t0 = src.now(); time.sleep(5); t1 = src.now()
        idle = src.window(t0, t1)                  # None for --power none
        ...run N inferences between t0 and t1...
        run = src.window(t0, t1)
        energy = per_inference(run, N, idle.mean_w)

Importing this package needs only the standard library and numpy; each source
imports its own dependency when it is built.
"""

from adn_edge.errors import PowerSourceError
from adn_edge.power.base import (
    DEVICE_CHOICES,
    POWER_CHOICES,
    PowerSource,
    power_source,
    resolve_power,
)
from adn_edge.power.energy import (
    MIN_RUN_SAMPLES,
    InferenceEnergy,
    PowerSample,
    WindowPower,
    idle_baseline,
    integrate_mj,
    mean_power_w,
    min_run_seconds,
    per_inference,
    window_power,
)

__all__ = [
    "DEVICE_CHOICES", "MIN_RUN_SAMPLES", "POWER_CHOICES", "InferenceEnergy", "PowerSample", "PowerSource",
    "PowerSourceError", "WindowPower", "idle_baseline", "integrate_mj", "mean_power_w", "min_run_seconds",
    "per_inference", "power_source", "resolve_power", "window_power",
]
