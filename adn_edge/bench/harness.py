"""``adn-edge bench``: latency and energy of every sub-network, through the runtime.

Sub-networks run through :class:`~adn_edge.runtime.EngineSwitcher` (``infer`` with
a per-call sub-network), i.e. the very code a robot runs, so what is measured is
what is deployed. Order of work, chosen so that numbers can be trusted:

1. the power meter is started before anything is loaded (a missing meter fails
   fast), and an idle baseline is taken before the first run;
2. each sub-network is warmed up (by count and by time), then timed for at least
   ``iterations`` calls and, when power is measured, long enough for the meter to
   give >= 20 samples. Without a power meter the calls are *interleaved*: split into
   rounds of ~10 calls per sub-network, the sub-networks visited in a fresh random
   order each round (2 warm-up calls before each later block). Noise on a shared
   machine comes in bursts (another process, a VM neighbour, a clock change); timed
   one after another, a burst lands on whichever sub-network runs then and reorders
   sub-networks whose latencies are close, which moves the Pareto front from run to
   run. Interleaved, every sub-network sees the same mixture of bursts. Measured by
   ``benchmarks/bench_front_stability.py`` on the embedded model: 100 calls one after
   another lost the cheapest sub-network from the front in 7 of 38 benches; 400
   interleaved in blocks of 10, in none, with p99 ranked like MACs (Spearman 0.95
   vs 0.72) and 5 distinct fronts in 16 benches instead of 15. With a power meter each
   sub-network runs in one block (``rounds=1``): its energy needs one window long
   enough for >= 20 meter samples;
3. each call is timed on the host clock around ``infer`` (inputs in, logits out:
   copies included, as a control loop sees it);
4. with ``hz`` (``adn-edge bench --hz N``), each sub-network is timed a second time in
   a *paced* loop, one call every 1/N s with the thread asleep in between, which is
   what a robot's control loop does. Caches, branch predictors, the CPU's clock and
   ONNX Runtime's thread pool cool down while it sleeps, so a paced call is often
   slower than a call of the back-to-back (hot) loop; budgets for a loop at N Hz
   should come from the paced numbers (the governor and ``examples/robot_loop.py``
   use them when the report has them). Deadline misses (calls slower than the
   deadline, by default the period 1/N) are counted in both loops;
5. the machine state (clocks, power mode, versions, load) goes into the report, and
   unstable timings are summarised once, with advice for this device
   (:mod:`adn_edge.bench.noise`).

CPU threads: ``--threads`` not given on ``--device cpu`` means
:func:`adn_edge.bench.threads.default_cpu_threads` (usable CPUs - 1, at least 1),
chosen by measurement (``benchmarks/bench_timing_noise.py``); the report records
the count used (``settings.threads``, ``settings.threads_rule``).
"""

from __future__ import annotations

import dataclasses

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge import subnet as subnet_mod
from adn_edge.bench import report as report_mod
from adn_edge.bench.machine import load_probe, machine_state, other_load
from adn_edge.bench.noise import summary as noise_summary
from adn_edge.bench.stats import CV_WARN, latency_stats
from adn_edge.bench.threads import RULE, default_cpu_threads
from adn_edge.errors import AdnError
from adn_edge.modeldir import ModelDir, open_dir
from adn_edge.modeldir import manifest as manifest_mod
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.results import find_eval, identity, load_accuracy

DEVICES = ("orin", "cuda", "cpu")
Iterate = Callable[[Sequence[Any], str], Iterable[Any]]
"""A progress wrapper (``adn_edge.cli.output.progress``): given the items and a label,
yields the items. :func:`run_bench` hands it the ``(round, code)`` blocks of the hot
loop, then the codes of the paced loop."""


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
    rounds: int | None = None
    """Interleave the timing: every sub-network is timed in this many blocks of
    ``ceil(iterations / rounds)`` calls, visiting the sub-networks in a new random order
    each later round. None: :func:`plan_rounds` (1 round when power is measured, else
    blocks of ~10 calls)."""
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
    segmented: bool | None = None
    """Run every sub-network as its chain of segment graphs (``export --segments``),
    as a switcher opened with ``segmented=True`` does; reported apart
    (``bench-<device>-segmented.json``). None: what ``EngineSwitcher.open`` would
    choose (:func:`adn_edge.runtime.switcher.default_segmented`), so the bench measures
    the configuration a robot gets by default."""
    hz: float | None = None
    """Also time a paced loop at this rate (one call every 1/hz s, sleeping between)."""
    paced_iterations: int | None = None
    """Timed calls of the paced loop per sub-network (default: ``iterations``)."""
    deadline_ms: float | None = None
    """Deadline per inference for the miss counts (default: the period, 1000/hz ms)."""


def _check(opts: BenchOptions) -> None:
    """Refuse impossible options before anything is loaded. Times must be finite: a NaN
    compares false with everything, so ``--duration nan`` used to pass every check and
    end up as ``NaN`` in the report (which then is not JSON); ``inf`` never ends."""

    from adn_edge.fileio import check_threads

    if opts.device not in DEVICES:
        raise AdnError(f"--device must be one of {', '.join(DEVICES)}, not {opts.device!r}.")
    if opts.rounds is not None and (isinstance(opts.rounds, bool) or not isinstance(opts.rounds, int)):
        raise AdnError(f"--rounds must be a whole number, not {opts.rounds!r}.")
    for name in ("batch", "iterations", "rounds"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            raise AdnError(f"--{name} must be at least 1, not {getattr(opts, name)}.")
    if opts.paced_iterations is not None and opts.paced_iterations < 1:
        raise AdnError(f"--paced-iterations must be at least 1, not {opts.paced_iterations}.")
    for flag, value in (("--hz", opts.hz), ("--deadline-ms", opts.deadline_ms)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise AdnError(f"{flag} must be a finite number above 0, not {value!r}.",
                           "For a 10 Hz control loop: --hz 10.")
    if opts.deadline_ms is not None and opts.hz is None:
        raise AdnError("--deadline-ms counts deadline misses of the paced loop, which only runs with --hz.",
                       "Add --hz N (the loop rate), e.g. --hz 10 --deadline-ms 50.")
    if opts.hz is not None and opts.hz > 10_000:
        raise AdnError(f"--hz {opts.hz:g} is not a control-loop rate: above 10 kHz the loop hardly sleeps, and "
                       "the paced loop would time what the hot loop times.", "Use the rate of your loop, e.g. --hz 30.")
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
        threads = bench_threads(opts, name)
        if threads:
            options["threads"] = threads
    return name, {**options, **opts.backend_options}


def bench_threads(opts: BenchOptions, backend: str) -> int | None:
    """CPU threads the bench gives ``backend``: ``--threads``, else on ``--device cpu`` the
    rule of :mod:`adn_edge.bench.threads` (usable CPUs - 1, at least 1); None (the
    library's default) on GPUs and for backends without CPU threads. A ``threads``
    backend option (``-O threads=N``) wins over both."""
    if "threads" in opts.backend_options:
        value = opts.backend_options["threads"]
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if opts.threads:
        return opts.threads
    if opts.device == "cpu" and backend in ("onnxruntime", "torch"):
        return default_cpu_threads()
    return None


BLOCK_CALLS = 10
"""Timed calls per block when the bench interleaves (``rounds`` not given)."""
REWARM_CALLS = 2
"""Untimed calls before each block after a sub-network's first: the first call after
another sub-network ran meets caches that hold the other one's weights."""


def plan_rounds(opts: BenchOptions, measures_energy: bool, subnets: int) -> int:
    """How many interleaved rounds to time in: 1 for a single sub-network (there is
    nothing to interleave with); ``opts.rounds`` (at most one per iteration); 1 when
    power is measured, as energy per sub-network needs one window long enough for the
    meter; else blocks of :data:`BLOCK_CALLS` calls."""
    if subnets < 2:
        return 1
    if opts.rounds is not None:
        return max(1, min(opts.rounds, opts.iterations))
    if measures_energy:
        return 1
    return max(1, opts.iterations // BLOCK_CALLS)


def round_orders(codes: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """The order of the sub-networks in each round: as given in the first (the report
    and a single round keep the directory's order), then a seeded shuffle per round,
    so no sub-network always follows the same one or always runs at the same moment
    of a round. A round never starts with the sub-network that ended the one before
    (two blocks back to back would be one longer block)."""
    rng = np.random.default_rng(seed)
    orders = [list(codes)]
    for _ in range(rounds - 1):
        order = [codes[i] for i in rng.permutation(len(codes))]
        if len(order) > 1 and order[0] == orders[-1][-1]:
            order[0], order[1] = order[1], order[0]
        orders.append(order)
    return orders


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


def time_paced(call: Callable[[], Any], iterations: int, hz: float,
               sleep: Callable[[float], None] = time.sleep) -> tuple[list[float], int]:
    """Time ``iterations`` calls at ``hz``: each tick starts 1/hz s after the previous one
    started, and the thread sleeps in between, as a control loop does. Returns
    (per-call seconds, ticks that started late because the previous call overran its
    period; the schedule then restarts from now instead of bursting to catch up).
    The first tick comes one period after the call, so even it follows an idle gap."""
    period = 1.0 / hz
    times: list[float] = []
    late = 0
    next_tick = time.perf_counter() + period
    for _ in range(iterations):
        delay = next_tick - time.perf_counter()
        if delay > 0:
            sleep(delay)
        a = time.perf_counter()
        call()
        b = time.perf_counter()
        times.append(b - a)
        next_tick += period
        if b > next_tick:  # overran into the next period: that tick starts late, the schedule restarts
            late += 1
            next_tick = b
    return times, late


def paced_result(paced_s: Sequence[float], hot_s: Sequence[float], late: int, hz: float, deadline_ms: float,
                 batch: int, cv_threshold: float, hot_p99_ms: float) -> dict[str, Any]:
    """A sub-network's ``paced`` block: the paced loop's latency statistics, and the
    deadline misses of both loops at ``deadline_ms``."""
    stats = latency_stats(paced_s, batch=batch, cv_threshold=cv_threshold)
    block: dict[str, Any] = {
        "hz": hz, "deadline_ms": round(deadline_ms, 4), "iterations": stats.iterations,
        "latency_ms": {k: round(v, 4) for k, v in stats.latency_ms().items()},
        "latency_cv": round(stats.cv, 5),
        "deadline_misses": int(sum(1 for t in paced_s if t * 1e3 > deadline_ms)),
        "hot_deadline_misses": int(sum(1 for t in hot_s if t * 1e3 > deadline_ms)),
        "hot_iterations": len(hot_s),
        "over_hot_p99": int(sum(1 for t in paced_s if t * 1e3 > hot_p99_ms)),
        "late_ticks": late,
    }
    if stats.warning:
        block["warning"] = stats.warning
    return block


def run_bench(directory: str | os.PathLike[str] | ModelDir, opts: BenchOptions, iterate: Iterate | None = None,
              write: bool = True) -> dict[str, Any]:
    """Benchmark the sub-networks of a model directory; returns the report (and writes it)."""
    from adn_edge.power import power_source, resolve_power
    from adn_edge.power.energy import combine_windows, idle_baseline, min_run_seconds, per_inference
    from adn_edge.runtime import EngineSwitcher

    _check(opts)
    opened = open_dir(directory)
    directory, m = opened.path, opened.manifest
    if opts.segmented is None:
        from adn_edge.runtime.switcher import default_segmented

        opts = dataclasses.replace(opts, segmented=default_segmented(m, opts.backend, opts.precision,
                                                                     opts.device)[0])
    power_name = resolve_power(opts.power, opts.device)
    source = power_source(power_name, interval_ms=opts.interval_ms) if power_name != "none" else \
        power_source("none")
    backend, backend_opts = resolve_backend(opts, m)
    iterate = iterate or (lambda items, _desc: items)
    threads = backend_opts.get("threads")
    load_start = _loadavg()
    probe = load_probe()
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
            results: dict[str, Any] = {}
            engine = sw.engine
            # A segmented directory may hold fewer monolithic sub-networks than it runs.
            costs = {**(m.get("segments") or {}).get("subnets", {}), **m["subnets"]}
            mode = f"{backend}{', segmented' if opts.segmented else ''}, {opts.device}"
            rounds = plan_rounds(opts, source.measures_energy, len(codes))
            per_block = -(-opts.iterations // rounds)
            rewarm = min(REWARM_CALLS, opts.warmup_iters)  # before every block but a sub-network's first
            # --duration is shared out over the blocks; with a meter each block is also
            # long enough for its own energy window.
            block_s = opts.duration_s / rounds
            if source.measures_energy:
                block_s = max(block_s, min_run_seconds(opts.interval_ms))
            times: dict[str, list[float]] = {c: [] for c in codes}
            device_ms: dict[str, list[float]] = {c: [] for c in codes}
            windows: dict[str, list[Any]] = {c: [] for c in codes}
            blocks = [(r, c) for r, order in enumerate(round_orders(codes, rounds, opts.seed)) for c in order]
            label = f"bench {m['arch']} ({mode}{f', {rounds} rounds' if rounds > 1 else ''})"
            for r, code in iterate(blocks, label):
                block_dev: list[float] = []

                def call(c: str = code, dev: list[float] = block_dev) -> None:
                    sw.infer(x, subnet=c)
                    if engine.last_device_ms is not None:  # GPU backends: CUDA-event time
                        dev.append(engine.last_device_ms)

                first = r == 0
                block, t0, t1 = time_calls(call, per_block, block_s, opts.warmup_iters if first else rewarm,
                                           opts.warmup_s if first else 0.0)
                times[code] += block
                device_ms[code] += block_dev[-len(block):] if block_dev else []
                windows[code].append(source.window(t0, t1))
            hot_p99: dict[str, float] = {}
            for code in codes:
                stats = latency_stats(times[code], batch=opts.batch, cv_threshold=opts.cv_threshold)
                hot_p99[code] = stats.p99_ms
                energy = None
                window = combine_windows(windows[code])
                if window is not None:
                    energy = per_inference(window, len(times[code]), idle.mean_w if idle else None)
                entry = costs.get(code, {})
                extra: dict[str, Any] = {}
                if device_ms[code]:  # device compute vs host-side overhead, where the backend can tell
                    dev = latency_stats([t / 1e3 for t in device_ms[code]], batch=opts.batch)
                    extra["device_ms"] = {k: round(v, 4) for k, v in dev.latency_ms().items()}
                    extra["host_overhead_ms"] = round(stats.latency_ms()["p50"] - dev.latency_ms()["p50"], 4)
                results[code] = report_mod.subnet_result(stats, energy, skip_cfg=subnet_mod.to_skip_cfg(code),
                                                         gmacs=entry.get("gmacs"), **extra)
            if opts.hz:  # after the hot loop: a paced loop per sub-network (sleeping, so never interleaved)
                for code in iterate(codes, f"paced loop at {opts.hz:g} Hz"):
                    def paced_call(c: str = code) -> None:
                        sw.infer(x, subnet=c)

                    for _ in range(rewarm):  # as before a hot block: the last
                        paced_call()  # block was another sub-network's, and the paced figures compare with them
                    paced_s, late = time_paced(paced_call, opts.paced_iterations or opts.iterations, opts.hz)
                    results[code]["paced"] = paced_result(
                        paced_s, times[code], late, opts.hz, opts.deadline_ms or 1000.0 / opts.hz, opts.batch,
                        opts.cv_threshold, hot_p99[code])
            competing = other_load(probe, load_probe())  # what else ran while this was timed
            describe = sw.describe()
            precision = getattr(engine, "precision", None)  # what ran, whether asked for or the default
        finally:
            sw.close()
        power = report_mod.power_block(source.describe(), idle)
    accuracy, accuracy_source = accuracy_for(directory, m, precision, opts)
    if accuracy:
        for code, entry in results.items():
            entry["accuracy"] = accuracy.get(code)
    device = machine_state(opts.device, threads=threads)
    if isinstance(device.get("cpu"), dict):
        device["cpu"]["loadavg_start"] = load_start
        device["cpu"]["other_load"] = competing
    settings = {**asdict(opts), "subnets": codes, "threads": threads, "rounds_used": rounds,
                "threads_rule": RULE if threads is not None and not opts.threads
                and "threads" not in opts.backend_options else None}
    extra_blocks: dict[str, Any] = {"accuracy_source": accuracy_source}
    if opts.hz:
        deadline = opts.deadline_ms or 1000.0 / opts.hz
        extra_blocks["paced"] = {
            "hz": opts.hz, "period_ms": round(1000.0 / opts.hz, 4), "deadline_ms": round(deadline, 4),
            "iterations": opts.paced_iterations or opts.iterations,
            "timing": "one call every 1/hz s (the thread sleeps in between), timed like the hot loop; "
                      "deadline_misses: calls slower than deadline_ms; over_hot_p99: paced calls slower than "
                      "the hot loop's p99"}
    report = report_mod.make_report(
        device=device, backend=backend, segmented=opts.segmented, precision=precision, batch=opts.batch, power=power,
        subnets=results,
        model={"arch": m["arch"], "directory": str(directory), "num_stages": m["num_stages"],
               "input_shape": shape, "precision": opts.precision},
        settings=settings, runtime=describe, identity=identity(m, codes),
        timing="host wall-clock around EngineSwitcher.infer (input copy-in and logits copy-out included); "
               "on GPUs also device_ms, CUDA events around the compute; "
               + (f"interleaved: {rounds} rounds of {per_block} calls per sub-network, the first round in the "
                  f"directory's order, each later one in a new random order, {rewarm} "
                  "untimed calls before each later block"
                  if rounds > 1 else "each sub-network timed in one block"),
        **extra_blocks,
    )
    report["noise"] = noise_summary(report, opts.cv_threshold)
    if write:
        with writing(directory, "bench"):  # measured on these graphs: written only if they are still these
            if manifest_mod.load(directory).get("source") != m.get("source"):
                raise AdnError(f"{str(directory)!r} was re-exported while it was being benchmarked; the "
                               "measurements describe graphs that are gone and were not written.",
                               "Run `adn-edge bench` again.")
            path = report_mod.write_report(report, directory)
            report_mod.write_csv(report, path.with_suffix(".csv"))
    return report


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def accuracy_for(directory: Path, m: dict[str, Any], ran: str | None,
                 opts: BenchOptions) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    """Accuracies to copy into the report, and where they came from. The evaluation must
    describe the precision that ran: an INT8 run never gets FP32 accuracies (INT8 can
    lose points that FP32 keeps); FP16 and FP32 stand in for each other."""
    from adn_edge.fileio import read_json

    precision = (ran or opts.precision or "fp32").lower()
    path = find_eval(Path(directory), precision, opts.segmented)
    if path is None:
        return None, None
    record = read_json(path, "evaluation results")
    evaluated = str((record.get("precision") if isinstance(record, dict) else None) or "fp32").lower()
    source: dict[str, Any] = {"file": path.name, "precision": evaluated,
                              "dataset": record.get("dataset") if isinstance(record, dict) else None,
                              "split": record.get("split") if isinstance(record, dict) else None, "metric": "top1"}
    if evaluated != precision and "int8" in (evaluated, precision):
        source["note"] = (f"{path.name} evaluated {evaluated} graphs and this run timed {precision}: its accuracies "
                          f"were not attached (`adn-edge eval DIR --precision {precision}` measures them)")
        return None, source
    return load_accuracy(directory, m, precision=precision, segmented=opts.segmented, path=path), source
