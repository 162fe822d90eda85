"""The source used with ``--power none`` (and by ``auto`` on CPUs).

It exists so that the harness has one code path: it starts and stops like any
meter, holds no samples, and says in the report that energy was not measured, so a
reader never mistakes a missing number for a zero.
"""

from __future__ import annotations

from typing import Any, ClassVar

from adn_edge.power.base import PowerSource

NOT_MEASURED = "energy not measured: no power source was used (--power none)"


class NoPowerSource(PowerSource):
    name: ClassVar[str] = "none"
    measures_energy: ClassVar[bool] = False

    def __init__(self, interval_ms: float | None = None, **_ignored: Any) -> None:
        # Sampling options are meaningless here; accept them so callers can pass the
        # same options whatever source was resolved.
        super().__init__(None)

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False

    def describe(self) -> dict[str, Any]:
        return {"source": "none", "rail": None, "interval_ms": None, "measured": False,
                "note": NOT_MEASURED}
