"""One summary of unstable timings, with advice that fits the device measured.

Each sub-network whose coefficient of variation (CV) exceeds the threshold is flagged
in its entry (``warning``, ``!`` in the table), but what a user reads is one paragraph:
which sub-networks were noisy, that their p99 (what budgets are held to) is therefore
not to be trusted, and what to do about it *on this device*: on a CPU the thread
count, other load and the frequency governor; on a Jetson ``jetson_clocks``; on a
desktop GPU locked clocks (``nvidia-smi -lgc``). Advice for a GPU on a CPU run (or the
other way round) only sends people looking in the wrong place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OTHER_CPUS = 0.2
"""CPUs busy with other processes (or stolen by the hypervisor) during a run above
which they are named as a cause of noise."""


def _cpu_advice(device: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    cpu = device.get("cpu") or {}
    usable = cpu.get("usable_cpus") or cpu.get("logical_cpus")
    threads = settings.get("threads") or cpu.get("threads")
    tips = []
    if threads is None or (usable and threads >= usable):
        from adn_edge.bench.threads import default_cpu_threads

        suggest = default_cpu_threads(usable) if usable else 1
        have = "all its" if threads is None else str(threads)
        tips.append(f"ONNX Runtime used {have} threads on {usable or '?'} usable CPUs; a thread preempted by anything "
                    f"else stalls the whole inference: try --threads {suggest}")
    competing = cpu.get("other_load") if isinstance(cpu.get("other_load"), Mapping) else None
    load = [v for v in (cpu.get("loadavg_start"), cpu.get("loadavg")) if isinstance(v, (int, float))]
    if competing is not None:  # measured while the benchmark ran, itself excluded
        if competing.get("other_cpus", 0) >= OTHER_CPUS:
            tips.append(f"other programs kept {competing['other_cpus']:.1f} of {usable or '?'} CPUs busy while it "
                        "ran: stop them, or measure when the machine is idle")
        if competing.get("steal_cpus", 0) >= OTHER_CPUS:
            tips.append(f"the hypervisor took {competing['steal_cpus']:.1f} CPUs (steal time: a VM on a busy "
                        "host): measure on a dedicated machine")
    elif load and usable and max(load) > 0.5:
        tips.append(f"other programs may have been running (1-minute load average {max(load):.2f} on {usable} "
                    "CPUs, this benchmark included): stop them, or measure when the machine is idle")
    elif not load:
        tips.append("stop other programs while measuring")
    governor = cpu.get("governor")
    if governor is None:
        tips.append("pin the CPU frequency where you can (`sudo cpupower frequency-set -g performance`; the "
                    "frequency governor is not visible here, as in most VMs)")
    elif governor != "performance":
        tips.append(f"pin the CPU frequency: `sudo cpupower frequency-set -g performance` (governor now "
                    f"{governor!r})")
    return tips


def advice(device: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> str:
    """What to do about noisy timings on ``device`` (a report's ``device`` block)."""
    settings = settings or {}
    kind = str(device.get("kind", "cpu"))
    if kind == "orin":
        jetson = device.get("jetson") or {}
        tips = []
        if jetson.get("jetson_clocks") is not True:
            tips.append("lock the clocks: `sudo jetson_clocks`")
        tips.append("use the highest power mode (`sudo nvpmodel -q` shows it, now "
                    f"{device.get('power_mode') or 'unknown'})")
        tips.append("stop other GPU and CPU load (tegrastats shows it)")
    elif kind == "cuda":
        tips = ["lock the GPU clocks: `sudo nvidia-smi -lgc <max>,<max>` (`nvidia-smi -q -d SUPPORTED_CLOCKS` "
                "lists them; `sudo nvidia-smi -rgc` resets), with persistence mode on (`sudo nvidia-smi -pm 1`)",
                "stop other GPU processes (`nvidia-smi` lists them)"]
    else:
        tips = _cpu_advice(device, settings)
    tips.append("or time more iterations (-n)")
    return "; ".join(tips) + "."


def unstable(report: Mapping[str, Any], threshold: float) -> dict[str, dict[str, float]]:
    """``{"hot": {code: cv}, "paced": {code: cv}}`` of the sub-networks above ``threshold``."""
    out: dict[str, dict[str, float]] = {"hot": {}, "paced": {}}
    for code, e in report["subnets"].items():
        cv = e.get("latency_cv")
        if isinstance(cv, (int, float)) and cv > threshold:
            out["hot"][code] = float(cv)
        paced = e.get("paced") or {}
        pcv = paced.get("latency_cv")
        if isinstance(pcv, (int, float)) and pcv > threshold:
            out["paced"][code] = float(pcv)
    return out


def _listed(cvs: Mapping[str, float], most: int = 6) -> str:
    """The worst ``most`` as ``code CV%``, worst first, and how many more."""
    worst = sorted(cvs.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{c} {v * 100:.0f}%" for c, v in worst[:most])
    return text + (f" and {len(worst) - most} more" if len(worst) > most else "")


def summary(report: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """The report's ``noise`` block: threshold, unstable codes and one paragraph (``text``,
    None when every timing was stable)."""
    bad = unstable(report, threshold)
    n = len(report["subnets"])
    block: dict[str, Any] = {"cv_threshold": threshold, "unstable": bad["hot"], "unstable_paced": bad["paced"],
                             "text": None, "advice": None}
    if not bad["hot"] and not bad["paced"]:
        return block
    parts = []
    if bad["hot"]:
        parts.append(f"{len(bad['hot'])} of {n} sub-networks ({_listed(bad['hot'])})")
    if bad["paced"]:
        parts.append(f"in the paced loop {len(bad['paced'])} of {n} ({_listed(bad['paced'])})")
    block["advice"] = advice(report.get("device") or {}, report.get("settings") or {})
    block["text"] = (f"Unstable latency (coefficient of variation above {threshold * 100:g}%): "
                     + "; ".join(parts) + ". Their p99, which latency budgets are held to, may be far off. "
                     + "To steady them: " + block["advice"])
    return block
