"""The machine state a benchmark ran under, recorded beside its numbers.

A latency is meaningless without the clocks it ran at: an Orin in its 7 W mode
without ``jetson_clocks`` is several times slower than in MAXN with it. Everything
here is best effort: a field that cannot be read is None, and nothing raises,
because a missing detail must never cost the user their benchmark.

Files are read under ``root`` and commands run through ``run`` so that tests can
fake a Jetson with a directory tree and a dict of command outputs. Only read-only
commands are run (``nvpmodel -q``, ``jetson_clocks --show``, ``nvidia-smi --query``).
What their output means is decided in one place, :mod:`adn_edge.platform` (the same
parsers ``adn-edge doctor`` uses, tested on every recorded Jetson output), so the
bench report and the doctor never read one board differently.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from adn_edge.platform import jetson, nvidia_smi
from adn_edge.platform.system import Runner, run_command
from adn_edge.platform.system import read_text as _read

__all__ = ["Runner", "machine_state", "run_command"]

_GPU_DEVFREQ = ("gpu", "ga10b", "gv11b", "gp10b", "gm20b", "gb10b")


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - best effort by design
        return None


# -- Jetson -----------------------------------------------------------------------------

def board_model(root: Path = Path("/")) -> str | None:
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        model = jetson.parse_model(_read(root, rel))
        if model:
            return model
    return None


def parse_l4t(text: str | None) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``35.4.1``."""
    release = jetson.parse_nv_tegra_release(text)
    return release.version if release is not None else None


def jetpack_version(l4t: str | None) -> str | None:
    """The JetPack release of an L4T version, as precisely as it is known."""
    rel = jetson.release_for_l4t(l4t)
    return rel.jetpack if rel is not None else None


def parse_nvpmodel_query(text: str | None) -> tuple[str | None, int | None]:
    """``nvpmodel -q [--verbose]`` output -> (mode name, mode id)."""
    mode = jetson.parse_nvpmodel(text)
    return (mode.name, mode.mode_id) if mode is not None else (None, None)


def nvpmodel_mode(root: Path = Path("/"), run: Runner = run_command) -> tuple[str | None, int | None, str | None]:
    """(mode name, id, how it was found). ``nvpmodel -q`` first, then its status file."""
    name, mode_id = parse_nvpmodel_query(run(["nvpmodel", "-q"]))
    if name is not None:
        return name, mode_id, "nvpmodel -q"
    status = _read(root, "var/lib/nvpmodel/status")
    m = re.search(r"pmode:(\d+)", status or "")
    if m:
        mode_id = int(m.group(1))
        return jetson.parse_power_models(_read(root, "etc/nvpmodel.conf")).get(mode_id), mode_id, \
            "/var/lib/nvpmodel/status"
    return None, None, None


def parse_jetson_clocks_show(text: str | None) -> bool | None:
    """``jetson_clocks --show`` -> True when every online CPU and the GPU run min == max."""
    clocks = jetson.parse_jetson_clocks(text)
    return clocks.pinned if clocks is not None else None


def jetson_clocks_from_sysfs(root: Path = Path("/")) -> bool | None:
    """jetson_clocks pins every CPU's and the GPU's minimum frequency to its maximum."""
    pairs = []
    for d in sorted((Path(root) / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        mn, mx = _read(d, "scaling_min_freq"), _read(d, "scaling_max_freq")
        if mn and mx and mn.strip().isdigit() and mx.strip().isdigit():
            pairs.append((int(mn), int(mx)))
    if not pairs:
        return None
    for d in sorted((Path(root) / "sys/class/devfreq").glob("*")):
        if any(k in d.name.lower() for k in _GPU_DEVFREQ):
            mn, mx = _read(d, "min_freq"), _read(d, "max_freq")
            if mn and mx and mn.strip().isdigit() and mx.strip().isdigit():
                pairs.append((int(mn), int(mx)))
    return all(a == b for a, b in pairs)


def jetson_clocks_state(root: Path = Path("/"), run: Runner = run_command) -> tuple[bool | None, str | None]:
    """(on?, how it was found). ``--show`` needs root; sysfs is the fallback."""
    shown = parse_jetson_clocks_show(run(["jetson_clocks", "--show"]))
    if shown is not None:
        return shown, "jetson_clocks --show"
    sysfs = jetson_clocks_from_sysfs(root)
    return sysfs, ("sysfs min/max frequencies" if sysfs is not None else None)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None


def tensorrt_version() -> str | None:
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs"):
        v = _dist_version(dist)
        if v:
            return str(v)
    mod = _try(lambda: importlib.import_module("tensorrt"))
    return getattr(mod, "__version__", None) if mod is not None else None


def jetson_state(root: Path = Path("/"), run: Runner = run_command) -> dict[str, Any]:
    from adn_edge.platform.system import jetson_release

    release = jetson_release(root, run)
    l4t = release.l4t if release is not None else None
    mode, mode_id, mode_src = nvpmodel_mode(root, run)
    clocks, clocks_src = jetson_clocks_state(root, run)
    model = board_model(root)
    return {"board": model, "is_jetson": bool(l4t) or "jetson" in (model or "").lower(),
            "l4t": l4t, "jetpack": jetpack_version(l4t), "nvpmodel": mode, "nvpmodel_id": mode_id,
            "nvpmodel_source": mode_src, "jetson_clocks": clocks, "jetson_clocks_source": clocks_src,
            "tensorrt": tensorrt_version()}


# -- CUDA GPUs --------------------------------------------------------------------------

_SMI_FIELDS = ["name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
               "power.limit", "pstate"]


def _nvidia_smi(index: int, run: Runner) -> dict[str, Any]:
    out = run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits",
               "-i", str(index)])
    rows = nvidia_smi.parse_query_csv(out, _SMI_FIELDS)
    if not rows:
        return {}
    row = rows[0]

    def num(key: str) -> float | None:
        v = row.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    return {"name": row.get("name"), "driver": row.get("driver_version"),
            "clocks_mhz": {"sm": num("clocks.sm"), "memory": num("clocks.mem")},
            "max_clocks_mhz": {"sm": num("clocks.max.sm"), "memory": num("clocks.max.mem")},
            "power_limit_w": num("power.limit"), "pstate": row.get("pstate"), "source": "nvidia-smi"}


def cuda_state(index: int = 0, pynvml: ModuleType | None = None, run: Runner = run_command) -> dict[str, Any]:
    """GPU name, driver and clocks via NVML (``nvidia-smi`` when nvidia-ml-py is absent)."""
    nv = pynvml if pynvml is not None else _try(lambda: importlib.import_module("pynvml"))
    if nv is None or not _nvml_ok(nv):
        smi = _nvidia_smi(index, run)
        return smi or {"name": None, "error": "neither nvidia-ml-py nor nvidia-smi could describe the GPU"}
    try:
        h = nv.nvmlDeviceGetHandleByIndex(index)

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        def clocks(fn: Callable[..., Any]) -> dict[str, Any]:
            return {k: _try(functools.partial(fn, h, c)) for k, c in (
                ("graphics", getattr(nv, "NVML_CLOCK_GRAPHICS", 0)), ("sm", getattr(nv, "NVML_CLOCK_SM", 1)),
                ("memory", getattr(nv, "NVML_CLOCK_MEM", 2)))}

        cuda_v = _try(nv.nvmlSystemGetCudaDriverVersion)
        cc = _try(lambda: nv.nvmlDeviceGetCudaComputeCapability(h))
        limit = _try(lambda: nv.nvmlDeviceGetPowerManagementLimit(h))
        pstate = _try(lambda: nv.nvmlDeviceGetPerformanceState(h))
        mem = _try(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        return {"name": _try(lambda: text(nv.nvmlDeviceGetName(h))),
                "driver": _try(lambda: text(nv.nvmlSystemGetDriverVersion())),
                "cuda_driver": f"{cuda_v // 1000}.{cuda_v % 1000 // 10}" if isinstance(cuda_v, int) else None,
                "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
                "clocks_mhz": clocks(nv.nvmlDeviceGetClockInfo),
                "max_clocks_mhz": clocks(nv.nvmlDeviceGetMaxClockInfo),
                "power_limit_w": limit / 1000.0 if isinstance(limit, (int, float)) else None,
                "pstate": f"P{pstate}" if isinstance(pstate, int) else None,
                "persistence_mode": _try(lambda: bool(nv.nvmlDeviceGetPersistenceMode(h))),
                "memory_total_mib": mem.total // (1 << 20) if mem is not None and hasattr(mem, "total") else None,
                "source": "nvml"}
    except Exception as exc:  # noqa: BLE001
        smi = _nvidia_smi(index, run)
        return smi or {"name": None, "error": f"NVML: {exc}"}
    finally:
        _try(nv.nvmlShutdown)


def _nvml_ok(nv: ModuleType) -> bool:
    # nvmlInit returns None on success, so _try cannot tell success from failure.
    try:
        nv.nvmlInit()
        return True
    except Exception:  # noqa: BLE001
        return False


# -- CPUs -------------------------------------------------------------------------------

def parse_cpuinfo(text: str | None) -> dict[str, Any]:
    """Model name and physical core count from ``/proc/cpuinfo`` (x86 and Arm)."""
    if not text:
        return {"model": None, "physical_cores": None}
    fields: dict[str, str] = {}
    cores: set[tuple[str, str]] = set()
    phys: str | None = None
    core: str | None = None
    for ln in text.splitlines():
        if ":" not in ln:
            if phys is not None and core is not None:
                cores.add((phys, core))
            phys = core = None
            continue
        k, _, v = ln.partition(":")
        k, v = k.strip(), v.strip()
        fields.setdefault(k, v)
        if k == "physical id":
            phys = v
        elif k == "core id":
            core = v
    if phys is not None and core is not None:
        cores.add((phys, core))
    model = fields.get("model name") or fields.get("Hardware") or fields.get("Processor")
    if not model and "CPU part" in fields:
        model = f"Arm CPU (implementer {fields.get('CPU implementer', '?')}, part {fields['CPU part']})"
    return {"model": model, "physical_cores": len(cores) or None}


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """CPUs allowed by a cgroup v2 quota (a container limited to 2 cores -> 2.0)."""
    text = _read(root, "sys/fs/cgroup/cpu.max")
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return int(parts[0]) / int(parts[1])
    except (ValueError, ZeroDivisionError):
        return None


def cpu_state(root: Path = Path("/"), threads: int | None = None) -> dict[str, Any]:
    """CPU model, cores, threads the benchmark used, governor, container quota and the
    1-minute load average (of this machine; None when ``root`` is a fake tree)."""
    info = parse_cpuinfo(_read(root, "proc/cpuinfo"))
    governor = _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    affinity = _try(lambda: len(os.sched_getaffinity(0)))
    load = _try(os.getloadavg) if root == Path("/") else None  # other load: the first suspect of noisy timings
    return {"model": info["model"] or platform.processor() or platform.machine() or None,
            "arch": platform.machine() or None,
            "logical_cpus": os.cpu_count(), "physical_cores": info["physical_cores"],
            "usable_cpus": affinity, "cgroup_quota_cpus": cgroup_cpu_quota(root),
            "threads": threads, "governor": governor.strip() if governor else None,
            "loadavg": round(load[0], 2) if load else None}


def load_probe(root: Path = Path("/")) -> dict[str, float] | None:
    """A snapshot for :func:`other_load`: the machine's busy and stolen CPU seconds
    (``/proc/stat``) and this process's own CPU seconds (all its threads). None where
    ``/proc/stat`` cannot be read."""
    import time

    text = _read(root, "proc/stat")
    first = (text or "").splitlines()[:1]
    fields = first[0].split() if first else []
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    try:
        ticks = [int(v) for v in fields[1:]]
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        return None
    ticks += [0] * (8 - len(ticks))
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    own = os.times()
    return {"wall": time.monotonic(), "busy": (user + nice + system + irq + softirq) / hz, "steal": steal / hz,
            "own": own.user + own.system}


def other_load(start: dict[str, float] | None, end: dict[str, float] | None) -> dict[str, float] | None:
    """CPUs kept busy by *other* processes between two :func:`load_probe` snapshots
    (machine busy time minus this process's own), and CPUs taken by the hypervisor
    (``steal``). Unlike the load average, which lags a minute and counts the benchmark
    itself, this says what competed with the measurement while it ran."""
    if not start or not end:
        return None
    wall = end["wall"] - start["wall"]
    if wall <= 0:
        return None
    other = max(0.0, (end["busy"] - start["busy"]) - (end["own"] - start["own"])) / wall
    return {"other_cpus": round(other, 2), "steal_cpus": round(max(0.0, end["steal"] - start["steal"]) / wall, 2),
            "seconds": round(wall, 1)}


# -- everything -------------------------------------------------------------------------

def software_versions() -> dict[str, str | None]:
    """Versions from package metadata only: nothing heavy (torch!) is imported."""
    from adn_edge import __version__

    out: dict[str, str | None] = {"adn_edge": __version__, "python": platform.python_version()}
    for dist in ("numpy", "onnxruntime", "onnxruntime-gpu", "torch", "nvidia-ml-py"):
        out[dist] = _dist_version(dist)
    return out


def machine_state(device: str, *, root: Path = Path("/"), run: Runner = run_command,
                  pynvml: ModuleType | None = None, gpu_index: int = 0, threads: int | None = None) -> dict[str, Any]:
    """The report's ``device`` block: ``kind``, ``name``, ``power_mode`` plus details.

    ``power_mode`` is the nvpmodel mode on a Jetson, the power limit on a CUDA GPU and
    the CPU frequency governor on a CPU: whichever setting most changes the numbers.
    Never raises.
    """
    kind = str(device).strip().lower()
    state: dict[str, Any] = {"kind": kind, "name": None, "power_mode": None}
    try:
        state["cpu"] = cpu_state(root, threads)
        if kind == "orin":
            j = jetson_state(root, run)
            state.update(name=j["board"], power_mode=j["nvpmodel"], jetson=j)
        elif kind == "cuda":
            g = cuda_state(gpu_index, pynvml, run)
            limit = g.get("power_limit_w")
            state.update(name=g.get("name"), power_mode=f"{limit:.0f} W limit" if limit else None, gpu=g)
        else:
            state.update(name=state["cpu"]["model"], power_mode=state["cpu"]["governor"])
        state["platform"] = _try(platform.platform)
        state["software"] = software_versions()
    except Exception as exc:  # noqa: BLE001 - a missing detail must not cost the benchmark
        state["error"] = f"{type(exc).__name__}: {exc}"
    return state


if __name__ == "__main__":  # pragma: no cover - handy on a new board
    import json

    json.dump(machine_state(sys.argv[1] if len(sys.argv) > 1 else "cpu"), sys.stdout, indent=2, default=str)
