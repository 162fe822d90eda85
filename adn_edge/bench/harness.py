"""``adn-edge bench``: latency and energy of every sub-network, through the runtime.

Sub-networks run through :class:`~adn_edge.runtime.EngineSwitcher` (``infer`` with
a per-call sub-network), i.e. the very code a robot runs, so what is measured is
what is deployed. Order of work, chosen so that numbers can be trusted:

1. the power meter is started before anything is loaded (a missing meter fails
   fast), and an idle baseline is taken before the first run;
2. each sub-network is warmed up (by count and by time), then timed for at least
   ``iterations`` calls and, when power is measured, long enough for the meter to
   give >= 20 samples;
3. each call is timed on the host clock around ``infer`` (inputs in, logits out:
   copies included, as a control loop sees it);
4. the machine state (clocks, power mode, versions) goes into the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from adn_edge import subnet as subnet_mod
from adn_edge.bench import report as report_mod
from adn_edge.bench.machine import machine_state
from adn_edge.bench.stats import CV_WARN, latency_stats
from adn_edge.errors import AdnError
from adn_edge.modeldir import ModelDir, open_dir
from adn_edge.modeldir import manifest as manifest_mod
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.results import identity, load_accuracy

DEVICES = ("orin", "cuda", "cpu")
Iterate = Callable[[Sequence[str], str], Any]


@dataclass
class BenchOptions:
    device: str = "cpu"
    backend: str = "auto"
    power: str = "auto"
    subnets: Sequence[str] | str = "all"
    precision: str | None = None
    batch: int = 1
    iterations: int = 100
    """Timed calls per sub-network, at least (the issue's floor: 100 on CPU)."""
    duration_s: float = 0.0
    """Minimum timed seconds per sub-network (0: iterations decide)."""
    warmup_iters: int = 10
    warmup_s: float = 0.5
    idle_s: float = 5.0
    """Idle baseline length when power is measured."""
    interval_ms: float = 50.0
    threads: int | None = None
    cv_threshold: float = CV_WARN
    seed: int = 0
    backend_options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword options for the backend (e.g. ONNX Runtime's
    ``graph_optimization="all", share_weights=False`` for speed over memory)."""
    segmented: bool = False
    """Run every sub-network as its chain of segment graphs (``export --segments``),
    as a switcher opened with ``segmented=True`` does; reported apart
    (``bench-<device>-segmented.json``)."""


def _check(opts: BenchOptions) -> None:
    """Refuse impossible options before anything is loaded. Times must be finite: a NaN
    compares false with everything, so ``--duration nan`` used to pass every check and
    end up as ``NaN`` in the report (which then is not JSON); ``inf`` never ends."""
    import math

    from adn_edge.fileio import check_threads

    if opts.device not in DEVICES:
        raise AdnError(f"--device must be one of {', '.join(DEVICES)}, not {opts.device!r}.")
    for name in ("batch", "iterations"):
        if getattr(opts, name) < 1:
            raise AdnError(f"--{name} must be at least 1, not {getattr(opts, name)}.")
    if opts.warmup_iters < 0:
        raise AdnError(f"--warmup must not be negative, not {opts.warmup_iters}.")
    for flag, value, positive in (("--duration", opts.duration_s, False), ("--warmup-seconds", opts.warmup_s, False),
                                  ("--idle-seconds", opts.idle_s, False), ("--interval-ms", opts.interval_ms, True),
                                  ("cv_threshold", opts.cv_threshold, True)):
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise AdnError(f"{flag} must be a finite number {'above' if positive else 'of at least'} 0, not {value!r}.",
                           "Pass a number of seconds (milliseconds for --interval-ms), such as 5.")
    check_threads(opts.threads)


def resolve_backend(opts: BenchOptions, m: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(backend name, backend options) for ``--backend`` on ``--device``.

    The choice is the runtime's one rule (:func:`adn_edge.runtime.resolve_backend`):
    on ``cpu`` ONNX Runtime; on a GPU TensorRT when the directory has engines and
    TensorRT can run, else ONNX Runtime with its CUDA provider, else torch on CUDA.
    The name is the base one (``onnxruntime``); the switcher adds ``-segmented``.
    This function only adds the device and thread options the bench flags imply.
    """
    from adn_edge.runtime import resolve_backend as choose

    name = choose(opts.backend, segmented=opts.segmented, manifest=m, device=opts.device).name
    name = name.removesuffix("-segmented")
    options: dict[str, Any] = {}
    if name in ("onnxruntime", "torch"):
        options["device"] = "cpu" if opts.device == "cpu" else "cuda"
        if opts.threads:
            options["threads"] = opts.threads
    return name, {**options, **opts.backend_options}


def time_calls(call: Callable[[], Any], iterations: int, min_s: float, warmup_iters: int,
               warmup_s: float) -> tuple[list[float], float, float]:
    """Warm up, then time calls; returns (per-call seconds, t_start, t_end) on perf_counter."""
    t_end_warm = time.perf_counter() + warmup_s
    n = 0
    while n < warmup_iters or time.perf_counter() < t_end_warm:
        call()
        n += 1
    times: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + min_s
    while len(times) < iterations or time.perf_counter() < deadline:
        a = time.perf_counter()
        call()
        times.append(time.perf_counter() - a)
    return times, t0, time.perf_counter()


def run_bench(directory: str | os.PathLike[str] | ModelDir, opts: BenchOptions, iterate: Iterate | None = None,
              write: bool = True) -> dict[str, Any]:
    """Benchmark the sub-networks of a model directory; returns the report (and writes it)."""
    from adn_edge.power import power_source, resolve_power
    from adn_edge.power.energy import idle_baseline, min_run_seconds, per_inference
    from adn_edge.runtime import EngineSwitcher

    _check(opts)
    opened = open_dir(directory)
    directory, m = opened.path, opened.manifest
    power_name = resolve_power(opts.power, opts.device)
    source = power_source(power_name, interval_ms=opts.interval_ms) if power_name != "none" else \
        power_source("none")
    backend, backend_opts = resolve_backend(opts, m)
    iterate = iterate or (lambda items, _desc: items)
    with source:
        t_idle0 = source.now()
        idle = None
        if source.measures_energy and opts.idle_s > 0:
            time.sleep(opts.idle_s)
            idle = idle_baseline(source.samples, t_idle0, source.now())
        sw = EngineSwitcher.open(opened, backend=backend, subnets=opts.subnets, precision=opts.precision,
                                 segmented=opts.segmented, warmup=False, **backend_opts)
        try:
            codes = list(sw.codes)
            shape = [opts.batch, *[int(d) for d in m["input"]["shape"][1:]]]
            static = m["input"]["shape"][0]
            if static is not None and static != opts.batch:
                raise AdnError(f"The model directory was exported with a static batch of {static}, "
                               f"but --batch {opts.batch} was asked for.", f"Use --batch {static}.")
            x = np.random.default_rng(opts.seed).standard_normal(shape, dtype=np.float32)
            min_s = opts.duration_s
            if source.measures_energy:
                min_s = max(min_s, min_run_seconds(opts.interval_ms))
            results: dict[str, Any] = {}
            engine = sw.engine
            # A segmented directory may hold fewer monolithic sub-networks than it runs.
            costs = {**(m.get("segments") or {}).get("subnets", {}), **m["subnets"]}
            mode = f"{backend}{', segmented' if opts.segmented else ''}, {opts.device}"
            for code in iterate(codes, f"bench {m['arch']} ({mode})"):
                device_ms: list[float] = []

                def call(c: str = code) -> None:
                    sw.infer(x, subnet=c)
                    if engine.last_device_ms is not None:  # GPU backends: CUDA-event time
                        device_ms.append(engine.last_device_ms)

                times, t0, t1 = time_calls(call, opts.iterations, min_s, opts.warmup_iters, opts.warmup_s)
                stats = latency_stats(times, batch=opts.batch, cv_threshold=opts.cv_threshold)
                energy = None
                window = source.window(t0, t1)
                if window is not None:
                    energy = per_inference(window, len(times), idle.mean_w if idle else None)
                entry = costs.get(code, {})
                extra: dict[str, Any] = {}
                if device_ms:  # device compute vs host-side overhead, where the backend can tell
                    dev = latency_stats([t / 1e3 for t in device_ms[-len(times):]], batch=opts.batch)
                    extra["device_ms"] = {k: round(v, 4) for k, v in dev.latency_ms().items()}
                    extra["host_overhead_ms"] = round(stats.latency_ms()["p50"] - dev.latency_ms()["p50"], 4)
                results[code] = report_mod.subnet_result(stats, energy, skip_cfg=subnet_mod.to_skip_cfg(code),
                                                         gmacs=entry.get("gmacs"), **extra)
            describe = sw.describe()
            precision = getattr(engine, "precision", None)  # what ran, whether asked for or the default
        finally:
            sw.close()
        power = report_mod.power_block(source.describe(), idle)
    accuracy = load_accuracy(directory, m, precision=opts.precision, segmented=opts.segmented)
    if accuracy:
        for code, entry in results.items():
            entry["accuracy"] = accuracy.get(code)
    device = machine_state(opts.device, threads=opts.threads)
    report = report_mod.make_report(
        device=device, backend=backend, segmented=opts.segmented, precision=precision, batch=opts.batch, power=power,
        subnets=results,
        model={"arch": m["arch"], "directory": str(directory), "num_stages": m["num_stages"],
               "input_shape": shape, "precision": opts.precision},
        settings={**asdict(opts), "subnets": codes}, runtime=describe, identity=identity(m, codes),
        timing="host wall-clock around EngineSwitcher.infer (input copy-in and logits copy-out included); "
               "on GPUs also device_ms, CUDA events around the compute",
    )
    if write:
        with writing(directory, "bench"):  # measured on these graphs: written only if they are still these
            if manifest_mod.load(directory).get("source") != m.get("source"):
                raise AdnError(f"{str(directory)!r} was re-exported while it was being benchmarked; the "
                               "measurements describe graphs that are gone and were not written.",
                               "Run `adn-edge bench` again.")
            path = report_mod.write_report(report, directory)
            report_mod.write_csv(report, path.with_suffix(".csv"))
    return report
