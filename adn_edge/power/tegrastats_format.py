"""What a ``tegrastats`` line says, in every JetPack's format; never raises.

Its line format changed with every generation (tests/fixtures/tegrastats/README.md
records each board's):

- rails print ``NAME inst/avg`` in mW without a unit (JetPack 4), ``NAME 5704mW/5704mW``
  (JetPack 5/6) or three values (JetPack 7); only the first, instantaneous, value is
  integrated, because the second is a running average since tegrastats started;
- the module-input rail is ``VDD_IN`` (or ``POM_5V_IN`` on the Nano); AGX Orin has none,
  so its module power is the sum of its rails (``NC`` excluded) and we say so;
- CPU+GPU power is a different rail on each board, and on no board a GPU-only one
  that we could honestly call "GPU power", so it is ``cpu_gpu_w`` with the rail(s)
  named beside it.

Garbage comes back as :class:`ParseFailure`, so one corrupt line cannot abort a
ten-minute benchmark. A line that parses but says something no Jetson can (a rail
above 1 kW or negative, a temperature outside -60..150 C) is :class:`Implausible`:
the sampler drops and counts it, instead of integrating ``VDD_IN 1000000000mW`` into
a report as one megawatt. Kept apart from the sampler: the parser is pure (tested on
every recorded board's output), the sampler is process management.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

MODULE_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Module-input rails, by preference. Boards without one get the sum of their rails."""

CPU_GPU_RAILS: tuple[tuple[str, ...], ...] = (
    ("VDD_CPU_GPU_CV",),              # Orin Nano/NX, Xavier NX: CPU + GPU + vision accelerators, one rail
    ("VDD_GPU_SOC", "VDD_CPU_CV"),    # AGX Orin: GPU+SoC and CPU+vision accelerators
    ("VDD_GPU", "VDD_CPU_SOC_MSS"),   # Thor (JetPack 7)
    ("VDD_CPU", "VDD_GPU"),           # TX2 (JetPack 4), AGX Xavier
    ("VDD_SYS_CPU", "VDD_SYS_GPU"),   # TX1/TX2 on L4T 28
    ("POM_5V_CPU", "POM_5V_GPU"),     # Nano (JetPack 4)
    ("CPU", "GPU"),                   # AGX Xavier (JetPack 4)
)
"""Rail sets that together carry the CPU and GPU, first match wins."""

UNUSED_RAILS = frozenset({"NC"})
"""Unconnected monitor channels: listed, never summed."""

PLAUSIBLE_MAX_MW = 1_000_000
"""No Jetson module draws 1 kW (Thor's maximum is ~130 W), on one rail or summed."""
PLAUSIBLE_TEMP_C = (-60.0, 150.0)
"""Beyond the industrial range (-40 C) and past thermal shutdown (~105 C Tj), with margin."""

_DATE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})")
_RAM = re.compile(r"(?<!\S)RAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"(?<!\S)SWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"(?<!\S)CPU \[([^\]]*)\]")
_CPU_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_GR3D = re.compile(r"(?<!\S)GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"(?<!\S)EMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/\S*)?(?!\S)")
_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (-?\d+)(mW)?/(-?\d+)(mW)?(?:/(-?\d+)(mW)?)?(?!\S)")
_TEMP_OFF = -256.0


@dataclass(frozen=True)
class TegrastatsReading:
    """One parsed line. Powers in watts, rails as printed in mW."""

    line: str
    date: str | None
    rails_mw: dict[str, int]
    """Instantaneous value of every rail, in printed order (a repeated name gets ``_2``...)."""
    rails_avg_mw: dict[str, int]
    """The running average tegrastats prints second: informative, never integrated."""
    module_w: float | None
    module_rail: str | None
    """``VDD_IN``/``POM_5V_IN``, or ``A+B+...`` when summed (see ``module_summed``)."""
    module_summed: bool
    """True when the board has no module-input rail and module power is the sum of its rails."""
    cpu_gpu_w: float | None
    cpu_gpu_rail: str | None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load_pct: tuple[int | None, ...] = ()
    """Per core; None for an offline core."""
    cpu_freq_mhz: tuple[int | None, ...] = ()
    gpu_load_pct: int | None = None
    gpu_freq_mhz: tuple[int, ...] = ()
    """One value per GPC on JetPack 6 (``GR3D_FREQ 0%@[305,305]``), one before."""
    emc_load_pct: int | None = None
    emc_freq_mhz: int | None = None
    temps_c: dict[str, float | None] = field(default_factory=dict)
    """Lower-cased sensor names; None for a sensor that is off (``-256C``)."""

    ok: ClassVar[bool] = True

    @property
    def rails_w(self) -> dict[str, float]:
        return {k: v / 1000.0 for k, v in self.rails_mw.items()}


@dataclass(frozen=True)
class ParseFailure:
    """A line that is not tegrastats output (reported, counted, never raised)."""

    line: str
    reason: str

    ok: ClassVar[bool] = False


@dataclass(frozen=True)
class Implausible(ParseFailure):
    """A line that parses but reports what no board can (dropped and counted as a
    rejected sample, never integrated; too many of them fail the run)."""


def _implausible(rails: dict[str, int], rails_avg: dict[str, int], module_w: float | None,
                 temps: dict[str, float | None]) -> str | None:
    """Why a parsed line cannot be a real reading, or None."""
    for table, which in ((rails, ""), (rails_avg, " (running average)")):
        for name, mw in table.items():
            if not 0 <= mw <= PLAUSIBLE_MAX_MW:
                return f"{name} {mw} mW{which} is outside 0..{PLAUSIBLE_MAX_MW // 1000} W"
    if module_w is not None and module_w * 1000 > PLAUSIBLE_MAX_MW:
        return f"module power {module_w:.1f} W (summed rails) is above {PLAUSIBLE_MAX_MW // 1000} W"
    low, high = PLAUSIBLE_TEMP_C
    for name, c in temps.items():
        if c is not None and not low <= c <= high:
            return f"{name} at {c:g} C is outside {low:g}..{high:g} C"
    return None


def _rails(line: str) -> tuple[dict[str, int], dict[str, int]]:
    inst: dict[str, int] = {}
    avg: dict[str, int] = {}
    seen: dict[str, int] = {}
    for m in _RAIL.finditer(line):
        name = m.group(1)
        units = [m.group(3), m.group(5)] + ([m.group(7)] if m.group(6) is not None else [])
        if len(set(units)) != 1:  # "RAM 2461/7620MB" style or mixed units: not a rail
            continue
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name}_{seen[name]}"
        while key in inst:  # a printed name that looks like one of our suffixed keys
            key += "_"
        inst[key] = int(m.group(2))
        avg[key] = int(m.group(4))
    return inst, avg


def _printed_name(key: str) -> str:
    """The name as printed, without the ``_2`` we add to a repeated one."""
    m = re.fullmatch(r"(.+)_\d+", key)
    return m.group(1) if m and m.group(1) in UNUSED_RAILS else key


def _module(rails: dict[str, int]) -> tuple[float | None, str | None, bool]:
    for name in MODULE_RAILS:
        if name in rails:
            return rails[name] / 1000.0, name, False
    used = [k for k in rails if _printed_name(k) not in UNUSED_RAILS]
    if not used:
        return None, None, False
    return sum(rails[k] for k in used) / 1000.0, "+".join(used), True


def _cpu_gpu(rails: dict[str, int]) -> tuple[float | None, str | None]:
    for names in CPU_GPU_RAILS:
        if all(n in rails for n in names):
            return sum(rails[n] for n in names) / 1000.0, "+".join(names)
    return None, None


def _cpu_cores(body: str) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    loads: list[int | None] = []
    freqs: list[int | None] = []
    for entry in body.split(","):
        m = _CPU_CORE.match(entry.strip())
        if m:
            loads.append(int(m.group(1)))
            freqs.append(int(m.group(2)) if m.group(2) else None)
        else:  # "off" or something unknown: an offline core
            loads.append(None)
            freqs.append(None)
    return tuple(loads), tuple(freqs)


def parse_line(line: str | bytes) -> TegrastatsReading | ParseFailure:
    """Parse one line of tegrastats output; never raises.

    Unknown fields are ignored (new JetPacks add engines every release). A line with
    none of RAM, CPU or power rails is a :class:`ParseFailure`.
    """
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        return _parse(str(line).rstrip("\r\n"))
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        return ParseFailure(str(line)[:500], f"unexpected parser error: {type(exc).__name__}: {exc}")


def _parse(text: str) -> TegrastatsReading | ParseFailure:
    if not text.strip():
        return ParseFailure(text, "empty line")
    ram = _RAM.search(text)
    cpu = _CPU.search(text)
    rails, rails_avg = _rails(text)
    if not (ram or cpu or rails):
        return ParseFailure(text[:500], "no RAM, CPU or power-rail fields")
    module_w, module_rail, summed = _module(rails)
    cpu_gpu_w, cpu_gpu_rail = _cpu_gpu(rails)
    date = _DATE.match(text)
    swap = _SWAP.search(text)
    loads, freqs = _cpu_cores(cpu.group(1)) if cpu else ((), ())
    gr3d = _GR3D.search(text)
    emc = _EMC.search(text)
    temps: dict[str, float | None] = {}
    for m in _TEMP.finditer(text):
        value = float(m.group(2))
        temps[m.group(1).lower()] = None if value <= _TEMP_OFF or not math.isfinite(value) else value
    why = _implausible(rails, rails_avg, module_w, temps)
    if why is not None:
        return Implausible(text[:500], why)
    return TegrastatsReading(
        line=text,
        date=date.group(1) if date else None,
        rails_mw=rails,
        rails_avg_mw=rails_avg,
        module_w=module_w,
        module_rail=module_rail,
        module_summed=summed,
        cpu_gpu_w=cpu_gpu_w,
        cpu_gpu_rail=cpu_gpu_rail,
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        swap_used_mb=int(swap.group(1)) if swap else None,
        swap_total_mb=int(swap.group(2)) if swap else None,
        cpu_load_pct=loads,
        cpu_freq_mhz=freqs,
        gpu_load_pct=int(gr3d.group(1)) if gr3d else None,
        gpu_freq_mhz=tuple(int(f) for f in gr3d.group(2).split(",") if f) if gr3d and gr3d.group(2) else (),
        emc_load_pct=int(emc.group(1)) if emc else None,
        emc_freq_mhz=int(emc.group(2)) if emc and emc.group(2) else None,
        temps_c=temps,
    )
