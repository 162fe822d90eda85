"""The checks behind ``adn-edge doctor``: what a user runs first on a Jetson or a GPU box.

One command answers "can this machine build and run TensorRT engines, and if not, what
exactly do I install?", because the answer depends on facts a user rarely has at hand
(which JetPack, which CUDA its driver runs, which cuda-python wheel fits it). Each
check reads the machine (files, read-only commands, imports), never changes it, and
never raises: a probe that breaks is reported as such and the next one runs.

- Python, TensorRT (version, API generation 10.x/11.x, where it came from), every CUDA
  binding (installed? does it start? CUDA's error name when not), the GPU (name,
  compute capability, SMs, memory), JetPack/L4T and its CUDA, the nvpmodel mode and
  jetson_clocks, nvidia-smi's driver and CUDA, the power meters (tegrastats rails, NVML),
  ONNX Runtime's providers;
- ``--full``: export the embedded model (two sub-networks), build fp32 and fp16 engines,
  run them with CUDA graphs off and on and compare with ONNX Runtime (sized for about a
  minute on an Orin; not yet timed on one);
- one verdict line last, and a JSON report to attach to a bug (``--json`` prints it).

Exit 0: ready. Exit 2: something is missing or mismatched that the user installs or
sets (the report says what). Exit 1: everything was there and the end-to-end run failed.
The parsing is :mod:`adn_edge.platform`'s, shared with the benchmark's machine record;
:mod:`adn_edge.cli.doctor` only renders the report and writes it.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from adn_edge.errors import EXIT_BAD_INPUT, EXIT_FAILURE
from adn_edge.platform import jetson, nvidia_smi
from adn_edge.platform.system import Runner, cuda_toolkit_version, jetson_release, read_text, run_any, run_command

OK, INFO, WARN, MISSING, FAIL = "ok", "info", "warn", "missing", "fail"
"""``missing``: the user installs or sets something (exit 2); ``fail``: it was there and
did not work (exit 1 for the end-to-end run, 2 for a setup problem)."""

FULL_CODES = ("1111", "0000")
"""The embedded model's super-net and base-net: the two ends of what a switcher runs."""
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}
"""Largest |TensorRT - ONNX Runtime| relative to the largest reference logit."""


@dataclass
class Check:
    key: str
    title: str
    status: str
    summary: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    setup: bool = True
    """A problem here is the user's to fix (exit 2); the end-to-end run is not (exit 1)."""


@dataclass
class Probes:
    """Everything the doctor reads, injectable: tests fake a Jetson with a directory
    tree and recorded command outputs."""

    root: Path = Path("/")
    run: Runner = run_command
    run_any: Runner = run_any
    which: Callable[[str], str | None] = shutil.which
    tensorrt: Callable[[], Any] = lambda: importlib.import_module("tensorrt")
    bindings: Callable[[], list[Any]] | None = None
    tegrastats: Callable[[], Any] | None = None
    nvml: Callable[[], dict[str, Any]] | None = None
    onnxruntime: Callable[[], Any] = lambda: importlib.import_module("onnxruntime")
    machine: str = field(default_factory=platform.machine)


def _dist(*names: str) -> tuple[str, str] | None:
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except Exception:  # noqa: BLE001 - absent or broken metadata
            continue
    return None


# --------------------------------------------------------------------------- platform facts


@dataclass(frozen=True)
class Facts:
    """What the checks share: is this a Jetson, which release, which CUDA."""

    l4t: str | None = None
    release: jetson.Release | None = None
    l4t_source: str | None = None
    model: str | None = None
    cuda_toolkit: str | None = None
    smi: nvidia_smi.SmiTable | None = None
    machine: str = ""

    @property
    def is_jetson(self) -> bool:
        return self.l4t is not None

    @property
    def cuda(self) -> str | None:
        """The CUDA bindings must match: the toolkit on a Jetson (else the JetPack's), the
        driver's on a desktop."""
        if self.is_jetson:
            return self.cuda_toolkit or (self.release.cuda if self.release else None)
        return self.smi.cuda if self.smi is not None else None


def gather_facts(p: Probes) -> Facts:
    rel = jetson_release(p.root, p.run)
    model = jetson.parse_model(read_text(p.root, "proc/device-tree/model"))
    toolkit, _ = cuda_toolkit_version(p.root, p.run)
    smi = nvidia_smi.parse_table(p.run(["nvidia-smi"]))
    return Facts(rel.l4t if rel else None, rel.release if rel else None, rel.source if rel else None, model,
                 toolkit, smi, p.machine)


def cuda_pin(facts: Facts) -> str:
    from adn_edge.backends.cuda import cuda_python_pin

    return cuda_python_pin(facts.cuda, facts.is_jetson, probe=False)


def tensorrt_fix(facts: Facts) -> str:
    """What to install for TensorRT on this machine, precisely when the facts allow."""
    if facts.is_jetson:
        rel = facts.release
        if rel is not None and rel.tensorrt is not None and int(rel.tensorrt.split(".")[0]) < 10:
            return (f"JetPack {rel.jetpack} ships TensorRT {rel.tensorrt}; adn-edge needs TensorRT 10: flash "
                    "JetPack 6.1 or newer (TensorRT 10.3), or 7.2 (TensorRT 10.16).")
        return ("`sudo apt-get install python3-libnvinfer python3-libnvinfer-dev` (JetPack's TensorRT, for the "
                "system Python; a virtual environment needs --system-site-packages).")
    major = (facts.cuda or "").split(".")[0]
    if major == "13":
        return "`pip install tensorrt-cu13` (this driver runs CUDA 13), i.e. `pip install 'adn-edge[tensorrt-cu13]'`."
    if major == "12":
        return "`pip install tensorrt-cu12` (this driver runs CUDA 12), i.e. `pip install 'adn-edge[tensorrt]'`."
    return ("an NVIDIA GPU and driver first; then `pip install tensorrt-cu12` for a CUDA 12 driver or "
            "`pip install tensorrt-cu13` for a CUDA 13 driver (nvidia-smi shows which).")


# --------------------------------------------------------------------------- checks


def python_check(p: Probes, facts: Facts) -> Check:
    venv = sys.prefix != sys.base_prefix
    data = {"version": platform.python_version(), "executable": sys.executable, "machine": facts.machine,
            "virtualenv": venv}
    status, fix = OK, None
    if venv and facts.is_jetson:
        cfg = read_text(Path(sys.prefix), "pyvenv.cfg") or ""
        system_site = "include-system-site-packages = true" in cfg.replace("\t", " ").lower()
        data["system_site_packages"] = system_site
        if not system_site:
            status = WARN
            fix = ("JetPack's TensorRT is installed for the system Python: create the environment with "
                   "`python3 -m venv --system-site-packages ...` or TensorRT will not import here.")
    return Check("python", "Python", status, f"{data['version']} ({sys.executable}, {facts.machine})", fix, data)


def tensorrt_check(p: Probes, facts: Facts) -> Check:
    from adn_edge.backends.tensorrt.env import MIN_MAJOR, api_generation, tensorrt_major

    try:
        trt = p.tensorrt()
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        return Check("tensorrt", "TensorRT", MISSING, f"not importable ({type(exc).__name__}: {exc})",
                     tensorrt_fix(facts))
    version = str(getattr(trt, "__version__", "?"))
    dist = _dist("tensorrt-cu13", "tensorrt-cu12", "tensorrt")
    data: dict[str, Any] = {"version": version, "api": api_generation(version) if version[:1].isdigit() else None,
                            "module": str(getattr(trt, "__file__", None)), "wheel": dist[0] if dist else None}
    try:
        major = tensorrt_major(version)
    except Exception:  # noqa: BLE001
        return Check("tensorrt", "TensorRT", FAIL, f"version {version!r} cannot be read", tensorrt_fix(facts), data)
    if major < MIN_MAJOR:
        return Check("tensorrt", "TensorRT", MISSING, f"{version} is too old (adn-edge needs {MIN_MAJOR}+)",
                     tensorrt_fix(facts), data)
    wheel = dist[0] if dist else None
    summary = f"{version}, API {data['api']}" + (f", from the {wheel} wheel" if wheel else "")
    wheel_cuda = {"tensorrt-cu13": "13", "tensorrt-cu12": "12"}.get(wheel or "")
    driver_cuda = (facts.cuda or "").split(".")[0]
    if wheel_cuda and driver_cuda and wheel_cuda != driver_cuda and not facts.is_jetson:
        return Check("tensorrt", "TensorRT", MISSING, summary + f", but the driver runs CUDA {facts.cuda}",
                     f"`pip uninstall {wheel}` and install tensorrt-cu{driver_cuda}.", data)
    if facts.is_jetson and facts.release is not None and facts.release.tensorrt and \
            not version.startswith(facts.release.tensorrt):
        return Check("tensorrt", "TensorRT", WARN, summary + f"; JetPack {facts.release.jetpack} ships "
                     f"{facts.release.tensorrt}", "Prefer JetPack's TensorRT (python3-libnvinfer): other builds may "
                     "not support the Jetson's GPU.", data)
    return Check("tensorrt", "TensorRT", OK, summary, None, data)


def bindings_check(reports: list[Any], facts: Facts) -> Check:
    from adn_edge.backends.cuda import CUDA_INSTALL_HINT

    data = {"bindings": [r.as_record() for r in reports]}
    parts = []
    for r in reports:
        if not r.installed:
            parts.append(f"{r.name} not installed")
        elif r.started:
            parts.append(f"{r.name} {r.version or ''} starts".replace("  ", " "))
        else:
            parts.append(f"{r.name} {r.version or ''} installed but cannot start "
                         f"({r.error_name or r.error})".replace("  ", " "))
    summary = "; ".join(parts)
    started = [r for r in reports if r.started]
    broken = [r for r in reports if r.installed and not r.started]
    pin = cuda_pin(facts)
    if not any(r.installed for r in reports):
        if facts.cuda is None:
            return Check("cuda", "CUDA bindings", MISSING, summary, CUDA_INSTALL_HINT, data)
        where = f"this Jetson (CUDA {facts.cuda})" if facts.is_jetson else f"this driver (CUDA {facts.cuda})"
        return Check("cuda", "CUDA bindings", MISSING, summary,
                     f"For {where}: `pip install '{pin}'`" + (" or `pip install pycuda` (built on the device)."
                                                               if facts.is_jetson else "."), data)
    if not started:
        hints = " ".join(dict.fromkeys(r.hint for r in broken if r.hint))
        return Check("cuda", "CUDA bindings", MISSING, summary, hints or f"`pip install '{pin}'`.", data)
    if broken:
        fix = " ".join(dict.fromkeys(r.hint for r in broken if r.hint)) or None
        return Check("cuda", "CUDA bindings", WARN, summary + f"; adn-edge uses {started[0].name}", fix, data)
    return Check("cuda", "CUDA bindings", OK, summary, None, data)


def gpu_check(reports: list[Any], facts: Facts) -> Check:
    dev = next((r.device for r in reports if r.started and r.device is not None), None)
    if dev is not None:
        data = {"name": dev.name, "compute_capability": dev.compute_capability, "sm_count": dev.sm_count,
                "memory_mib": dev.memory_mib}
        return Check("gpu", "GPU", OK, f"{dev.name}, compute capability {dev.compute_capability}, {dev.sm_count} SMs, "
                     f"{dev.memory_mib} MiB", None, data)
    if facts.smi is not None and facts.smi.gpus:
        names = ", ".join(g.name for g in facts.smi.gpus)
        return Check("gpu", "GPU", MISSING, f"the driver sees {names}, but no CUDA binding started on it",
                     "Fix the CUDA bindings above.", {"nvidia_smi": [g.name for g in facts.smi.gpus]})
    if facts.is_jetson:
        return Check("gpu", "GPU", MISSING, "no CUDA binding started, so the GPU could not be queried",
                     "Fix the CUDA bindings above.")
    return Check("gpu", "GPU", MISSING, "no NVIDIA GPU is visible (no CUDA binding started, nvidia-smi absent)",
                 "The TensorRT path needs an NVIDIA GPU (a Jetson, or a desktop/server GPU with its driver). On this "
                 "machine adn-edge still exports, evaluates and benchmarks with ONNX Runtime on the CPU "
                 "(`adn-edge demo`).")


def platform_check(facts: Facts, uname: str | None) -> Check:
    u = jetson.parse_uname(uname)
    data: dict[str, Any] = {"l4t": facts.l4t, "l4t_source": facts.l4t_source, "model": facts.model,
                            "cuda_toolkit": facts.cuda_toolkit, "machine": facts.machine,
                            "kernel": u.kernel if u else None}
    if facts.smi is not None:
        data["driver"] = {"version": facts.smi.driver, "cuda": facts.smi.cuda, "nvidia_smi": facts.smi.smi_version}
    if not facts.is_jetson:
        kind = "aarch64, but not a Jetson (no L4T release)" if facts.machine in ("aarch64", "arm64") \
            else f"not a Jetson ({facts.machine or 'unknown machine'})"
        drv = f"; driver {facts.smi.driver or facts.smi.smi_version}, CUDA {facts.smi.cuda or 'N/A'}" \
            if facts.smi is not None else "; no nvidia-smi"
        return Check("platform", "Platform", INFO, kind + drv, None, data)
    rel = facts.release
    data.update({"jetpack": rel.jetpack if rel else None, "jetpack_cuda": rel.cuda if rel else None,
                 "jetpack_tensorrt": rel.tensorrt if rel else None})
    summary = f"L4T R{facts.l4t} (JetPack {rel.jetpack if rel else '?'}"
    summary += f", CUDA {rel.cuda}" if rel and rel.cuda else ""
    summary += f", TensorRT {rel.tensorrt})" if rel and rel.tensorrt else ")"
    summary += f"; board says {facts.model!r}" if facts.model else ""
    if facts.cuda_toolkit:
        summary += f"; CUDA toolkit {facts.cuda_toolkit}"
    if rel is not None and rel.tensorrt is not None and int(rel.tensorrt.split(".")[0]) < 10:
        return Check("platform", "Jetson", MISSING, summary, tensorrt_fix(facts), data)
    return Check("platform", "Jetson", OK, summary, None, data)


def power_mode_check(query: str | None, conf: str | None) -> Check:
    mode = jetson.parse_nvpmodel(query)
    models = jetson.parse_power_models(conf)
    data = {"mode": mode.name if mode else None, "id": mode.mode_id if mode else None,
            "modes": {str(k): v for k, v in sorted(models.items())}, "errors": list(mode.errors) if mode else []}
    if mode is None:
        why = (query or "").strip().splitlines()[-1:] or ["nvpmodel not found"]
        return Check("nvpmodel", "Power mode", INFO, f"unknown ({why[0][:120]})", None, data)
    listed = f" of {', '.join(models.values())}" if models else ""
    summary = f"{mode.name} (id {mode.mode_id}){listed}"
    if mode.errors:
        summary += f"; nvpmodel reported {len(mode.errors)} error(s) without root"
    return Check("nvpmodel", "Power mode", INFO, summary,
                 "Benchmarks record the mode; compare numbers only across the same mode.", data)


def clocks_check(show: str | None, sysfs_pinned: bool | None) -> Check:
    clocks = jetson.parse_jetson_clocks(show)
    data: dict[str, Any] = {"shown": clocks is not None and clocks.error is None,
                            "error": clocks.error if clocks else None}
    pinned = clocks.pinned if clocks is not None and clocks.error is None else None
    how = "jetson_clocks --show"
    if pinned is None:
        pinned, how = sysfs_pinned, "sysfs min/max frequencies"
    data.update({"pinned": pinned, "source": how if pinned is not None else None})
    if clocks is not None and clocks.gpu is not None:
        data["gpu_max_mhz"] = clocks.gpu_max_mhz
        data["active_gpu_tpcs"] = clocks.active_gpu_tpcs
        data["cpus"] = len(clocks.cpus)
    err = f" ({clocks.error})" if clocks is not None and clocks.error else ""
    if pinned is True:
        return Check("clocks", "jetson_clocks", OK, f"on (clocks pinned at their maximum; {how})", None, data)
    if pinned is False:
        return Check("clocks", "jetson_clocks", WARN, f"off: clocks scale with load ({how}){err}",
                     "Run `sudo jetson_clocks` before benchmarking, or latencies include DVFS ramp-up.", data)
    return Check("clocks", "jetson_clocks", INFO, f"unknown{err or ' (jetson_clocks not found)'}",
                 "`sudo jetson_clocks --show` shows the state." if err else None, data)


def rails_report(reading: Any) -> dict[str, Any]:
    """What one tegrastats line says about power: rails in W, the module-input rail (or
    the sum when the board has none), the CPU+GPU rail(s)."""
    from adn_edge.power.tegrastats_format import TegrastatsReading, parse_line

    r = parse_line(reading) if isinstance(reading, (str, bytes)) else reading
    if not isinstance(r, TegrastatsReading):
        return {"ok": False, "reason": getattr(r, "reason", "no reading")}
    if r.module_w is None:
        return {"ok": False, "reason": "the line carries no power rails (some boards show them to root only)"}
    return {"ok": True, "rails_w": {k: round(v, 3) for k, v in r.rails_w.items()}, "module_rail": r.module_rail,
            "module_w": r.module_w, "module_summed": r.module_summed, "cpu_gpu_rail": r.cpu_gpu_rail,
            "cpu_gpu_w": r.cpu_gpu_w}


def _tegrastats_reading() -> Any:
    from adn_edge.power.tegrastats import TegrastatsSource

    src = TegrastatsSource(interval_ms=100, first_line_timeout_s=3.0)
    try:
        src.start()
        return src.board
    finally:
        src.stop()


def _nvml_state() -> dict[str, Any]:
    nv = importlib.import_module("pynvml")
    nv.nvmlInit()
    try:
        count = int(nv.nvmlDeviceGetCount())
        h = nv.nvmlDeviceGetHandleByIndex(0) if count else None
        power = None
        if h is not None:
            try:
                power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
            except Exception:  # noqa: BLE001 - "Not Supported" on Jetsons
                power = None
        return {"devices": count, "power_w": power}
    finally:
        nv.nvmlShutdown()


def power_check(p: Probes, facts: Facts) -> Check:
    data: dict[str, Any] = {}
    parts = []
    if p.which("tegrastats"):
        rails: dict[str, Any]
        try:
            reading = (p.tegrastats or _tegrastats_reading)()
            rails = rails_report(reading) if reading is not None else {"ok": False, "reason": "no power rails"}
        except Exception as exc:  # noqa: BLE001 - reported
            rails = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        data["tegrastats"] = rails
        watts: dict[str, float] = rails.get("rails_w") or {}
        if rails.get("ok"):
            parts.append(f"tegrastats: {', '.join(f'{k} {v:.2f} W' for k, v in watts.items())} "
                         f"(module: {rails['module_rail']})")
        else:
            parts.append(f"tegrastats present but unusable ({rails.get('reason')})")
    else:
        parts.append("tegrastats not found" + (" (sudo apt install nvidia-l4t-tools)" if facts.is_jetson else ""))
    try:
        nv = (p.nvml or _nvml_state)()
        data["nvml"] = nv
        parts.append(f"NVML: {nv['devices']} GPU(s)" + (f", {nv['power_w']:.1f} W" if nv.get("power_w") else
                                                        ", power not readable"))
    except Exception as exc:  # noqa: BLE001 - absent library or no driver
        data["nvml"] = {"error": f"{type(exc).__name__}: {exc}"}
        parts.append("NVML unavailable" + (" (pip install nvidia-ml-py)" if isinstance(exc, ImportError) else ""))
    usable = bool(data.get("tegrastats", {}).get("ok")) or bool(data.get("nvml", {}).get("power_w"))
    return Check("power", "Power meters", OK if usable else INFO, "; ".join(parts),
                 None if usable else "Without a meter, `adn-edge bench` measures latency only (--power none).", data)


def onnxruntime_check(p: Probes) -> Check:
    try:
        ort = p.onnxruntime()
        providers = list(ort.get_available_providers())
    except Exception as exc:  # noqa: BLE001
        return Check("onnxruntime", "ONNX Runtime", MISSING, f"not importable ({exc})", "`pip install onnxruntime`.")
    return Check("onnxruntime", "ONNX Runtime", OK, f"{getattr(ort, '__version__', '?')}: {', '.join(providers)}",
                 None, {"version": getattr(ort, "__version__", None), "providers": providers})


# --------------------------------------------------------------------------- end to end


def full_check(ready: bool, blockers: list[str], cuda: str, device: int, keep: Path | None,
               log: Callable[[str], None]) -> Check:
    """Export the embedded model's two end sub-networks, build fp32 and fp16 engines, run
    them with CUDA graphs off and on, compare with ONNX Runtime."""
    if not ready:
        return Check("full", "End to end (--full)", MISSING, "not run: it needs " + ", ".join(blockers),
                     "Fix the items above, then run `adn-edge doctor --full` again.")
    try:
        return _full_run(cuda, device, keep, log)
    except Exception as exc:  # noqa: BLE001 - reported as the run's failure
        from adn_edge.errors import AdnError

        setup = isinstance(exc, AdnError)
        return Check("full", "End to end (--full)", MISSING if setup else FAIL,
                     f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}",
                     getattr(exc, "hint", None), {"error": str(exc)}, setup=setup)


def _full_run(cuda: str, device: int, keep: Path | None, log: Callable[[str], None]) -> Check:
    import numpy as np

    from adn_edge.backends.tensorrt.build import build_directory
    from adn_edge.data import load_embedded
    from adn_edge.export import Exporter, ExportOptions
    from adn_edge.runtime import EngineSwitcher

    t0 = time.perf_counter()
    tmp = None if keep is not None else tempfile.TemporaryDirectory(prefix="adn-edge-doctor-")
    root = keep if keep is not None else Path(tmp.name)  # type: ignore[union-attr]
    try:
        out = root / "embedded"
        log(f"--full: exporting {', '.join(FULL_CODES)} of the embedded model to {out}")
        model, ckpt = load_embedded()
        Exporter(model, out, ckpt.source_record(), ExportOptions(fp16=True)).export(list(FULL_CODES))
        results: dict[str, Any] = {"directory": str(out), "builds": {}, "runs": []}
        for precision in ("fp32", "fp16"):
            log(f"--full: building {precision} engines")
            built = build_directory(out, subnets=list(FULL_CODES), precision=precision, max_batch=4, cuda=cuda,
                                    device=device)
            results["builds"][precision] = [{k: r[k] for k in ("code", "status", "observed", "build_seconds")}
                                            for r in built]
        x = np.random.default_rng(0).standard_normal((4, *model_input(out)), dtype=np.float32)
        with EngineSwitcher.open(out, backend="onnxruntime", subnets=list(FULL_CODES), segmented=False) as ref_sw:
            refs = {c: ref_sw.infer(x, c) for c in FULL_CODES}
        worst: dict[str, float] = {}
        for precision in ("fp32", "fp16"):
            for graphs in (False, True):
                with EngineSwitcher.open(out, backend="tensorrt", precision=precision, subnets=list(FULL_CODES),
                                         cuda=cuda, device=device, cuda_graphs=graphs, graph_batch=1) as sw:
                    for code in FULL_CODES:
                        for n in (1, 4):
                            got = sw.infer(x[:n], code)
                            ref = refs[code][:n]
                            err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))
                            worst[precision] = max(worst.get(precision, 0.0), err)
                            results["runs"].append({"precision": precision, "cuda_graphs": graphs, "code": code,
                                                    "batch": n, "rel_err": err})
                    t = time.perf_counter()
                    for _ in range(20):
                        sw.infer(x[:1], FULL_CODES[0])
                    results.setdefault("latency_ms_batch1", {})[f"{precision}{'+graphs' if graphs else ''}"] = \
                        round((time.perf_counter() - t) / 20 * 1000, 3)
                    results.setdefault("notes", []).extend(sw.describe()["engine"].get("notes", []))
        results["seconds"] = round(time.perf_counter() - t0, 1)
        bad = {p: e for p, e in worst.items() if e > TOLERANCE[p]}
        summary = (f"fp32 and fp16 engines of {', '.join(FULL_CODES)} built and run with CUDA graphs off and on; "
                   f"worst error vs ONNX Runtime fp32 {worst.get('fp32', 0):.1e}, fp16 {worst.get('fp16', 0):.1e} "
                   f"in {results['seconds']} s")
        if bad:
            return Check("full", "End to end (--full)", FAIL, summary + f"; over tolerance: {bad}",
                         "Attach the JSON report to a bug report.", results, setup=False)
        return Check("full", "End to end (--full)", OK, summary, None, results, setup=False)
    finally:
        if tmp is not None:
            tmp.cleanup()


def model_input(directory: Path) -> tuple[int, ...]:
    from adn_edge.modeldir import manifest

    return tuple(int(d) for d in manifest.load(directory)["input"]["shape"][1:])


# --------------------------------------------------------------------------- the report


def _safe(key: str, title: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a broken probe must not end the diagnosis
        return Check(key, title, FAIL, f"the check itself failed ({type(exc).__name__}: {exc})",
                     "Please report this with the JSON report attached.")


def collect(probes: Probes | None = None, full: bool = False, cuda: str = "auto", device: int = 0,
            keep: Path | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    p = probes or Probes()
    facts = gather_facts(p)
    reports: list[Any] = []

    def bindings() -> Check:
        from adn_edge.backends.cuda import probe_bindings

        reports.extend((p.bindings or (lambda: probe_bindings(device)))())
        return bindings_check(reports, facts)

    checks = [
        _safe("python", "Python", lambda: python_check(p, facts)),
        _safe("platform", "Platform", lambda: platform_check(facts, p.run(["uname", "-a"]))),
        _safe("tensorrt", "TensorRT", lambda: tensorrt_check(p, facts)),
        _safe("cuda", "CUDA bindings", bindings),
        _safe("gpu", "GPU", lambda: gpu_check(reports, facts)),
    ]
    if facts.is_jetson:
        from adn_edge.bench.machine import jetson_clocks_from_sysfs

        checks.append(_safe("nvpmodel", "Power mode", lambda: power_mode_check(
            p.run_any(["nvpmodel", "-q"]), read_text(p.root, "etc/nvpmodel.conf"))))
        checks.append(_safe("clocks", "jetson_clocks", lambda: clocks_check(
            p.run_any(["jetson_clocks", "--show"]), jetson_clocks_from_sysfs(p.root))))
    checks.append(_safe("power", "Power meters", lambda: power_check(p, facts)))
    checks.append(_safe("onnxruntime", "ONNX Runtime", lambda: onnxruntime_check(p)))
    if full:
        blockers = [c.title for c in checks if c.key in ("tensorrt", "cuda", "gpu") and c.status in (MISSING, FAIL)]
        checks.append(full_check(not blockers, blockers, cuda, device, keep, log))
    code, line = verdict(checks, full)
    from adn_edge import __version__

    return {"adn_edge": __version__, "when": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "full": full, "checks": [asdict(c) for c in checks], "exit_code": code, "verdict": line}


def verdict(checks: list[Check], full: bool) -> tuple[int, str]:
    """(exit code, one line): ready, not ready (what is missing), or failed (what)."""
    failed = [c for c in checks if c.status == FAIL and not c.setup]
    missing = [c for c in checks if c.status in (MISSING, FAIL) and c.setup]
    if missing:
        return EXIT_BAD_INPUT, (f"verdict: NOT READY for TensorRT: {', '.join(c.title for c in missing)} "
                                "missing or not working; the fixes are listed above (exit 2).")
    if failed:
        return EXIT_FAILURE, f"verdict: FAILED: {failed[0].title}: {failed[0].summary[:300]} (exit 1)."
    gpu = next((c for c in checks if c.key == "gpu"), None)
    trt = next((c for c in checks if c.key == "tensorrt"), None)
    what = f"TensorRT {trt.data.get('version')} on {gpu.data.get('name')}" if gpu and trt else "TensorRT"
    tail = "engines built, run and matched ONNX Runtime" if full else "run `adn-edge doctor --full` to build and run engines"
    return 0, f"verdict: READY: {what}; {tail}."
