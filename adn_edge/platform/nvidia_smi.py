"""``nvidia-smi`` output in the layouts real machines print; never raises.

Layouts seen (``tests/fixtures/jetson/``): the classic table (drivers < 550, and every
JetPack 6 Jetson, where the GPU is ``Orin (nvgpu)`` and every field reads ``N/A`` /
``Not Supported``), the wider table of drivers >= 550 (also JetPack 7's 595), Windows
(``Driver-Model``/``WDDM`` where Linux has ``Persistence-M``), ``CUDA Version: N/A``
(jetpack-nixos), and ``--query-gpu=... --format=csv`` whose headers and values carry
units (``memory.total [MiB]``, ``24576 MiB``, ``[N/A]``). JetPack 5 has no nvidia-smi at
all (``command not found``).

On a Jetson the table carries no memory or power figure: ``adn-edge doctor`` reads
those from CUDA and tegrastats instead, and uses nvidia-smi only for the driver and
the CUDA version the driver supports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NA = ("N/A", "[N/A]", "Not Supported", "[Not Supported]", "")
_TEXT_FIELDS = frozenset({"name", "uuid", "pci.bus_id", "serial", "vbios_version", "driver_version"})
"""Query fields whose values look like numbers but are not (``570.144`` is a version)."""


def _none(value: str) -> str | None:
    v = value.strip()
    return None if v in _NA else v


def _number(value: str) -> float | None:
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:%|[KMG]iB|W|C|MHz)?\s*", value)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class SmiGpu:
    """One GPU row pair of the table."""

    index: int
    name: str
    mode: str | None
    """``Persistence-M`` (``On``/``Off``) on Linux, ``Driver-Model`` (``WDDM``) on Windows."""
    bus_id: str | None = None
    temperature_c: float | None = None
    perf: str | None = None
    power_w: float | None = None
    power_cap_w: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    utilization_pct: float | None = None


@dataclass(frozen=True)
class SmiTable:
    """``nvidia-smi`` without arguments."""

    smi_version: str
    driver: str | None
    cuda: str | None
    """The newest CUDA the driver supports (not the toolkit installed)."""
    mode_column: str = "Persistence-M"
    gpus: tuple[SmiGpu, ...] = field(default=())


_HEAD = re.compile(r"NVIDIA-SMI\s+(\S+)\s+Driver Version:\s*(\S+)\s+CUDA Version:\s*(\S+)")
_ROW1 = re.compile(r"^\s*(\d+)\s+(.+?)\s{2,}(\S+)\s*$")
_ROW2 = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*/\s*(\S+)\s*$")
_MEM = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")


def parse_table(text: str | None) -> SmiTable | None:
    """None when the text holds no nvidia-smi header (not installed, or other output)."""
    lines = (text or "").splitlines()
    head = next((m for m in map(_HEAD.search, lines) if m), None)
    if head is None:
        return None
    mode_column = "Driver-Model" if any("Driver-Model" in ln for ln in lines) else "Persistence-M"
    gpus: list[SmiGpu] = []
    rows = [ln for ln in lines if ln.startswith("|") and not ln.startswith("|=")]
    in_gpus = False
    i = 0
    while i < len(rows):
        cells = rows[i].strip("|").split("|")
        if "Processes:" in rows[i]:
            break
        m1 = _ROW1.match(cells[0]) if cells else None
        if m1 and len(cells) >= 2 and i + 1 < len(rows):
            in_gpus = True
            nxt = rows[i + 1].strip("|").split("|")
            m2 = _ROW2.match(nxt[0]) if nxt else None
            mem = _MEM.search(nxt[1]) if len(nxt) > 1 else None
            util = nxt[2].split()[0] if len(nxt) > 2 and nxt[2].split() else ""
            bus = cells[1].split()[0] if cells[1].split() else ""
            gpus.append(SmiGpu(
                index=int(m1.group(1)), name=m1.group(2).strip(), mode=_none(m1.group(3)),
                bus_id=_none(bus),
                temperature_c=_number(m2.group(2)) if m2 else None,
                perf=_none(m2.group(3)) if m2 else None,
                power_w=_number(m2.group(4)) if m2 else None,
                power_cap_w=_number(m2.group(5)) if m2 else None,
                memory_used_mib=float(mem.group(1)) if mem else None,
                memory_total_mib=float(mem.group(2)) if mem else None,
                utilization_pct=_number(util),
            ))
            i += 2
            continue
        if in_gpus and not m1:
            i += 1
            continue
        i += 1
    return SmiTable(head.group(1), _none(head.group(2)), _none(head.group(3)), mode_column, tuple(gpus))


def parse_query_csv(text: str | None, fields: list[str] | None = None) -> list[dict[str, str | float | None]]:
    """``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``: one dict per GPU,
    keyed by field name without the unit (``memory.total``). Numbers become floats (the
    unit dropped), ``[N/A]`` None; other values stay text. ``fields``: the names for
    ``noheader`` output."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return []
    if fields is None:
        if "," not in lines[0] or not re.match(r"^[a-z_.]+(?: \[[^\]]+\])?(?:\s*,|$)", lines[0].strip()):
            return []
        fields = [re.sub(r"\s*\[.*\]$", "", f.strip()) for f in lines[0].split(",")]
        lines = lines[1:]
    out: list[dict[str, str | float | None]] = []
    for line in lines:
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            continue
        row: dict[str, str | float | None] = {}
        for name, value in zip(fields, values, strict=True):
            number = None if name in _TEXT_FIELDS or "version" in name else _number(value)
            row[name] = None if value in _NA else (number if number is not None else value)
        out.append(row)
    return out


def parse_list(text: str | None) -> list[tuple[int, str, str | None]]:
    """``nvidia-smi -L``: ``GPU 0: Orin (nvgpu) (UUID: ...)`` -> (index, name, uuid)."""
    out = []
    for m in re.finditer(r"^GPU (\d+): (.+?)(?: \(UUID: ([^)]*)\))?\s*$", text or "", re.M):
        out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out
