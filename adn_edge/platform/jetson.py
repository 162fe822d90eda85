"""Jetson facts from the text its tools print, in every L4T release's format; never raises.

What ``adn-edge doctor`` and the benchmark's machine record need to know about a Jetson:
which L4T/JetPack it runs (and so which CUDA and TensorRT it ships), which power mode,
whether ``jetson_clocks`` pinned the clocks, and what went wrong when a tool refused.
Each format difference below was seen in a real output (``tests/fixtures/jetson/``):

- ``/etc/nv_tegra_release``: one line on R32, four on R36/R39; the ``DATE`` field is free
  text (12-hour clock on R39), so only ``# R<major> (release), REVISION: <minor>.<patch>``
  is read. A desktop or a GH200 server (aarch64, not a Jetson) has no such file.
- ``nvpmodel -q``: ``NV Power Mode: <NAME>`` then the id on its own line; with
  ``--verbose`` the mode sits inside ``NVPM VERB: Current mode: NV Power Mode: 25W``, so
  the pattern is searched, not anchored. Without root JetPack 4 appends ``NVPM ERROR``
  lines. Names map to different ids per module (MAXN_SUPER is 2 on an Orin Nano).
- ``jetson_clocks --show``: ``cpu0: Online=1`` (R35), ``cpu0:  Online=1`` (R36), no
  ``Online=`` at all (R39); a carrier board's copy indents every line; without root it
  prints an error (on stdout) instead of the table.
- the device-tree model string is what the board's firmware says, which can be wrong (a
  Super devkit reporting a plain Orin Nano until its firmware update, a carrier board's
  own name): report it, never decide anything from it alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- releases


@dataclass(frozen=True)
class Release:
    """One JetPack release: its L4T version prefix, the CUDA and TensorRT it ships."""

    l4t: str
    jetpack: str
    cuda: str | None
    tensorrt: str | None


RELEASES: tuple[Release, ...] = (
    Release("32.5", "4.5", "10.2", "7.1"), Release("32.6", "4.6", "10.2", "8.0"),
    Release("32.7", "4.6.x", "10.2", "8.2"), Release("32", "4", "10.2", None),
    Release("34.1", "5.0 DP", "11.4", "8.4"), Release("35.1", "5.0.2", "11.4", "8.4"),
    Release("35.2", "5.1", "11.4", "8.5"), Release("35.3", "5.1.1", "11.4", "8.5"),
    Release("35.4", "5.1.2", "11.4", "8.5"), Release("35.5", "5.1.3", "11.4", "8.5"),
    Release("35.6", "5.1.4", "11.4", "8.5"), Release("35", "5", "11.4", "8.5"),
    Release("36.2", "6.0 DP", "12.2", "8.6"), Release("36.3", "6.0", "12.2", "8.6"),
    Release("36.4.0", "6.1", "12.6", "10.3"), Release("36.4.3", "6.2", "12.6", "10.3"),
    Release("36.4.4", "6.2.1", "12.6", "10.3"), Release("36.4.7", "6.2.1", "12.6", "10.3"),
    Release("36.5", "6.2.2", "12.6", "10.3"), Release("36.4", "6.1+", "12.6", "10.3"),
    Release("36", "6", None, None),
    Release("38.2", "7.0", "13.0", None), Release("38", "7", None, None),
    Release("39.2", "7.2", "13.2", "10.16"), Release("39", "7", None, None),
)
"""L4T -> JetPack, CUDA, TensorRT (major.minor), most specific prefix first. R36.4.7 and
R36.5.0 are as recorded on real boards (JetPack 6.2.1 and 6.2.2 package sets)."""


def release_for_l4t(l4t: str | None) -> Release | None:
    """The most specific :data:`RELEASES` entry for an L4T version (``36.4.3``)."""
    if not l4t:
        return None
    for rel in RELEASES:
        if l4t == rel.l4t or l4t.startswith(rel.l4t + "."):
            return rel
    return None


@dataclass(frozen=True)
class L4tRelease:
    """``/etc/nv_tegra_release``: ``# R36 (release), REVISION: 4.3, ..., BOARD: generic``."""

    major: int
    revision: str
    board: str | None

    @property
    def version(self) -> str:
        return f"{self.major}.{self.revision}"

    @property
    def release(self) -> Release | None:
        return release_for_l4t(self.version)


_L4T = re.compile(r"#\s*R(\d+)\s*\(\w+\),\s*REVISION:\s*([\d.]+)")
_BOARD = re.compile(r"BOARD:\s*([^,\s]+)")


def parse_nv_tegra_release(text: str | None) -> L4tRelease | None:
    """None for an absent file (``cat: ...: No such file or directory``) or other text."""
    m = _L4T.search(text or "")
    if not m:
        return None
    board = _BOARD.search(text or "")
    return L4tRelease(int(m.group(1)), m.group(2).strip("."), board.group(1) if board else None)


def parse_model(text: str | None) -> str | None:
    """``/proc/device-tree/model`` (NUL-terminated) or ``Machine:`` of jetson_clocks."""
    if not text:
        return None
    model = text.replace("\x00", "").strip()
    if not model or "No such file" in model:
        return None
    return model


# --------------------------------------------------------------------------- packages

_DPKG_L = re.compile(r"^[a-z][a-z ]\s+(\S+)\s+(\S+)\s+\S+\s+.*$")
_APT = re.compile(r"^([^/\s]+)/\S+\s+(\S+)\s+\S+(?:\s+\[.*\])?$")


def parse_packages(text: str | None) -> dict[str, str | None]:
    """Package -> version from ``dpkg-query -W`` (tab or space separated; an empty version
    means not installed), ``dpkg -l`` (``ii  name  version  arch  description``) or
    ``apt list --installed`` (``name/suite,now version arch [installed]``)."""
    out: dict[str, str | None] = {}
    for raw in (text or "").splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _DPKG_L.match(line)
        if m and line[:2].strip() in ("ii", "hi", "rc", "iU", "un"):
            out[m.group(1).split(":")[0]] = m.group(2)
            continue
        m = _APT.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2)
            continue
        parts = line.split("\t") if "\t" in line else line.split(" ", 1)
        name = parts[0].strip()
        if name and re.fullmatch(r"[a-z0-9][a-z0-9.+\-:]*", name):
            version = parts[1].strip() if len(parts) > 1 else ""
            out[name.split(":")[0]] = version or None
    return out


def l4t_from_packages(text: str | None) -> str | None:
    """L4T version from ``nvidia-l4t-core``'s package version (``36.3.0-20240719161631``)."""
    version = parse_packages(text).get("nvidia-l4t-core")
    if not version:
        return None
    m = re.match(r"(\d+\.\d+(?:\.\d+)?)", version)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- nvpmodel


@dataclass(frozen=True)
class NvpParam:
    """One ``NVPM VERB: PARAM <name>: ARG <arg>: PATH <path>: REAL_VAL: x CONF_VAL: y`` line."""

    name: str
    arg: str
    path: str
    real: str
    conf: str


@dataclass(frozen=True)
class NvpModel:
    """``nvpmodel -q [--verbose]``."""

    name: str
    mode_id: int | None
    errors: tuple[str, ...] = ()
    """``NVPM ERROR`` lines (JetPack 4 without root cannot read the EMC cap)."""
    params: tuple[NvpParam, ...] = ()
    """What ``--verbose`` says each setting is (REAL_VAL) and should be (CONF_VAL)."""

    def param(self, name: str, arg: str) -> NvpParam | None:
        return next((p for p in self.params if p.name == name and p.arg == arg), None)


_MODE = re.compile(r"NV Power Mode\s*:\s*(\S+)")
_PARAM = re.compile(r"PARAM\s+(\S+?):\s*ARG\s+(\S+?):\s*PATH\s+(\S+?):\s*REAL_VAL:\s*(\S+)\s+CONF_VAL:\s*(\S+)")


def parse_nvpmodel(text: str | None) -> NvpModel | None:
    """The current mode (name, id); None when the text holds no ``NV Power Mode``."""
    lines = [ln.strip() for ln in (text or "").splitlines()]
    for i, line in enumerate(lines):
        m = _MODE.search(line)
        if not m:
            continue
        rest = [ln for ln in lines[i + 1:] if ln]
        mode_id = int(rest[0]) if rest and rest[0].isdigit() else None
        errors = tuple(ln for ln in lines if ln.startswith("NVPM ERROR"))
        params = tuple(NvpParam(*p.groups()) for p in map(_PARAM.search, lines) if p)
        return NvpModel(m.group(1), mode_id, errors, params)
    return None


_POWER_MODEL = re.compile(r"POWER_MODEL:?\s+ID=(\d+)\s+NAME=([^\s>]+)")
_DEFAULT = re.compile(r"PM_CONFIG:\s*DEFAULT=([^\s(]+)\((\d+)\)")


def parse_power_models(text: str | None) -> dict[int, str]:
    """Mode id -> name from ``/etc/nvpmodel.conf`` (``< POWER_MODEL ID=2 NAME=MAXN_SUPER >``)
    or ``nvpmodel -p --verbose`` (``NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN``)."""
    return {int(i): n for i, n in _POWER_MODEL.findall(text or "")}


def default_power_model(text: str | None) -> tuple[str, int] | None:
    """``PM_CONFIG: DEFAULT=MODE_30W(2)`` of ``nvpmodel -p --verbose`` -> (name, id)."""
    m = _DEFAULT.search(text or "")
    return (m.group(1), int(m.group(2))) if m else None


# --------------------------------------------------------------------------- jetson_clocks


@dataclass(frozen=True)
class Clock:
    """One clock domain of ``jetson_clocks --show``: frequencies as printed (kHz for CPUs,
    Hz for GPU and EMC)."""

    name: str
    min_freq: int | None
    max_freq: int | None
    current: int | None
    online: bool | None = None
    """``Online=`` of a CPU (R35/R36); None where the release no longer prints it (R39)."""
    governor: str | None = None

    @property
    def pinned(self) -> bool | None:
        if self.min_freq is None or self.max_freq is None:
            return None
        return self.min_freq == self.max_freq


@dataclass(frozen=True)
class JetsonClocks:
    """``jetson_clocks --show``."""

    soc: str | None = None
    machine: str | None = None
    cpus: tuple[Clock, ...] = ()
    gpu: Clock | None = None
    emc: Clock | None = None
    active_gpu_tpcs: int | None = None
    power_mode: str | None = None
    fan: tuple[str, ...] = ()
    error: str | None = None
    """What the tool printed instead of the table (needs root, no GPU scaling, ...)."""
    notes: tuple[str, ...] = field(default=())
    """Other lines that were not understood (``Failed to retrieve unit state``)."""

    @property
    def pinned(self) -> bool | None:
        """True when ``jetson_clocks`` is on: every online CPU and the GPU run with
        min == max. None when the output does not show both (cut, or an error)."""
        cpus = [c for c in self.cpus if c.online is not False]
        if self.gpu is None or not cpus:
            return None
        states = [c.pinned for c in cpus] + [self.gpu.pinned]
        if any(s is None for s in states):
            return None
        return all(states)

    @property
    def gpu_max_mhz(self) -> float | None:
        return self.gpu.max_freq / 1e6 if self.gpu is not None and self.gpu.max_freq else None


_HEADER = re.compile(r"SOC family:\s*(\S+)\s+Machine:\s*(.+)$")
_CPU_LINE = re.compile(r"^cpu(\d+):\s+(.*)$")
_KV = re.compile(r"(\w+)=(\S*)")
_ERRORS = ("Error", "error:", "sudo:", "Permission denied")


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _clock(name: str, body: str) -> Clock:
    kv = dict(_KV.findall(body))
    online = kv.get("Online")
    return Clock(name, _int(kv.get("MinFreq")), _int(kv.get("MaxFreq")), _int(kv.get("CurrentFreq")),
                 None if online is None else online == "1", kv.get("Governor"))


def parse_jetson_clocks(text: str | None) -> JetsonClocks | None:
    """None when the text is empty or says nothing jetson_clocks prints."""
    fields: dict[str, Any] = {"cpus": [], "fan": [], "notes": []}
    errors: list[str] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _HEADER.search(line):
            fields["soc"], fields["machine"] = m.group(1), m.group(2).strip()
        elif m := _CPU_LINE.match(line):
            fields["cpus"].append(_clock(f"cpu{m.group(1)}", m.group(2)))
        elif line.startswith("GPU "):
            fields["gpu"] = _clock("GPU", line)
        elif line.startswith("EMC "):
            fields["emc"] = _clock("EMC", line)
        elif m := re.match(r"Active GPU TPCs:\s*(\d+)", line):
            fields["active_gpu_tpcs"] = int(m.group(1))
        elif m := _MODE.search(line):
            fields["power_mode"] = m.group(1)
        elif line.startswith("FAN "):
            fields["fan"].append(line)
        elif line.startswith(("Online CPUs", "DLA", "PVA")):
            continue
        elif any(line.startswith(e) for e in _ERRORS):
            errors.append(line)
        else:
            fields["notes"].append(line)
    if errors:
        fields["error"] = " ".join(errors)
    if not any(fields.get(k) for k in ("soc", "cpus", "gpu", "emc", "power_mode", "error")):
        return None
    fields["cpus"] = tuple(sorted(fields["cpus"], key=lambda c: int(c.name[3:])))  # R35 sorts as strings
    fields["fan"], fields["notes"] = tuple(fields["fan"]), tuple(fields["notes"])
    return JetsonClocks(**fields)


# --------------------------------------------------------------------------- versions


def parse_cuda_version_json(text: str | None) -> str | None:
    """The CUDA SDK version of ``/usr/local/cuda/version.json`` (``12.6.11``); also from a
    file cut short (not valid JSON any more)."""
    try:
        data = json.loads(text or "")
        version = data.get("cuda", {}).get("version") if isinstance(data, dict) else None
        if isinstance(version, str):
            return version
    except (ValueError, AttributeError):
        pass
    m = re.search(r'"cuda"\s*:\s*\{[^}]*?"version"\s*:\s*"([\d.]+)"', text or "", re.S)
    return m.group(1) if m else None


def parse_nvcc_version(text: str | None) -> str | None:
    """``Cuda compilation tools, release 12.6, V12.6.77`` -> ``12.6.77``."""
    m = re.search(r"release\s+([\d.]+),\s*V([\d.]+)", text or "")
    return m.group(2) if m else None


def cuda_minor(version: str | None) -> str | None:
    """``12.6.77`` -> ``12.6``."""
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_tensorrt_version(text: str | None) -> str | None:
    """TensorRT's version from what prints it: ``python -c 'print(tensorrt.__version__)'``
    (possibly prefixed), the ``tensorrt`` package of ``dpkg-query``/``dpkg -l``
    (``10.16.2.10-1+cuda13.2``) or ``trtexec`` (``[TensorRT v101602]`` -> ``10.16.2``).
    None for an ImportError traceback."""
    t = text or ""
    if "No module named" in t:
        return None
    if m := re.search(r"\[TensorRT v(\d+)\]", t):
        n = int(m.group(1))
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    packages = parse_packages(t)
    for name in ("tensorrt", "python3-libnvinfer", "libnvinfer10"):
        if packages.get(name):
            return str(packages[name]).split("-", 1)[0]
    m = re.search(r"\btensorrt\s+(\d+\.\d+[\d.]*)", t) or re.fullmatch(r"\s*(\d+\.\d+[\d.]*)\s*", t)
    return m.group(1) if m else None


def tensorrt_cuda(text: str | None) -> str | None:
    """The CUDA a TensorRT package was built for: ``10.3.0.30-1+cuda12.5`` -> ``12.5``."""
    m = re.search(r"\+cuda(\d+\.\d+)", text or "")
    return m.group(1) if m else None


@dataclass(frozen=True)
class Uname:
    kernel: str
    machine: str

    @property
    def tegra_kernel(self) -> bool:
        return "tegra" in self.kernel


def parse_uname(text: str | None) -> Uname | None:
    """``uname -a``: kernel release and machine (aarch64 alone does not mean Jetson: a
    GH200 server is aarch64 too; a ``-tegra`` kernel does)."""
    parts = (text or "").split()
    if len(parts) < 3 or parts[0] not in ("Linux", "Darwin"):
        return None
    machine = next((p for p in reversed(parts) if p in ("aarch64", "x86_64", "arm64", "armv7l")), parts[-2])
    return Uname(parts[2], machine)


@dataclass(frozen=True)
class CudaErrorReport:
    """A CUDA error a program printed: its code, and the name when the text holds it."""

    code: int
    name: str | None
    text: str


def parse_cuda_error(text: str | None) -> CudaErrorReport | None:
    """``RuntimeError: CUDA error code=35(b'cudaErrorInsufficientDriver')`` (cuda-python
    sample code) or deviceQuery's ``cudaGetDeviceCount returned 35`` + the reason line."""
    t = text or ""
    m = re.search(r"code=(\d+)\(b?'?(cuda\w+|CUDA_ERROR_\w+)?", t)
    if m:
        return CudaErrorReport(int(m.group(1)), m.group(2), m.group(0))
    m = re.search(r"(cuda\w+) returned (\d+)", t)
    if m:
        why = re.search(r"->\s*(.+)", t)
        return CudaErrorReport(int(m.group(2)), None, why.group(1).strip() if why else m.group(0))
    m = re.search(r"\b(cudaError\w+|CUDA_ERROR_\w+)\b", t)
    if m:
        return CudaErrorReport(-1, m.group(1), m.group(0))
    return None
