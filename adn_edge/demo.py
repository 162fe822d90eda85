"""``adn-edge demo``: the whole pipeline on the embedded model, on the CPU, in ~a minute.

Steps (each the same library call a user would make):

1. export every sub-network of the embedded ResNet-ADN with the recommended recipe
   (per-sub-network BatchNorm recalibration on the built-in training split), each
   graph verified against PyTorch;
2. evaluate every exported graph on the built-in test split (ONNX Runtime);
3. benchmark every sub-network on the CPU (the bench's default threads, which keep the
   latency tail steady; 400 calls each, interleaved in blocks of 10 so that bursts of
   noise fall on all sub-networks alike: with 100 calls one after another the front
   came out different in nearly every run and lost ``0000`` in 7 of 38, measured by
   ``benchmarks/bench_front_stability.py``), and say in one paragraph which timings
   were unstable;
4. open an EngineSwitcher over all of them and let the latency budget move. The
   budgets are placed by the measurements, one between each two consecutive
   Pareto-optimal sub-networks (p99 latency vs top-1) and one below the fastest, so
   every Pareto-optimal sub-network is chosen by one budget, whichever they are: the
   trade-off an adaptive network offers, on this machine, for this model. Each
   budget picks the most accurate sub-network that fits, switches, infers;
5. print the Pareto table and write the plot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Log = Callable[[str], None]
Iterate = Callable[[Sequence[Any], str], Any]


@dataclass
class DemoResult:
    directory: Path
    seconds: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    switches: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    plot: Path | None = None
    noise: str | None = None
    """The bench's one paragraph on unstable timings (None when all were stable)."""
    note: str | None = None
    """Said when the Pareto front is too short to show a trade-off (the model's, not the demo's)."""

    def summary(self) -> dict[str, Any]:
        subs = self.bench.get("subnets", {})
        return {
            "directory": str(self.directory), "seconds": self.seconds, "plot": str(self.plot) if self.plot else None,
            "pareto": self.pareto, "switches": self.switches, "noise": self.noise, "note": self.note,
            "threads": (self.bench.get("settings") or {}).get("threads"),
            "subnets": {c: {"top1": self.accuracy.get(c), "gmacs": e.get("gmacs"),
                            "latency_ms_p50": e["latency_ms"]["p50"], "latency_ms_p99": e["latency_ms"]["p99"],
                            "latency_cv": e.get("latency_cv")} for c, e in subs.items()},
        }


def spaced_budgets(front: Sequence[str], latency_ms: Mapping[str, float]) -> list[tuple[float, str | None]]:
    """Latency budgets that walk the Pareto front ``front`` (cheapest first), loosest first:
    for each Pareto-optimal code, one halfway between its latency and the next one's
    (the last: 25 % above its own), so the policy picks that code; then one 20 % below
    the fastest, which nothing fits (``None``: the policy answers with the closest).
    Depends on the measurements only, never on which code is the most accurate."""
    out: list[tuple[float, str | None]] = []
    for i, code in enumerate(front):
        here = latency_ms[code]
        nxt = latency_ms[front[i + 1]] if i + 1 < len(front) else here * 1.5
        out.append((round((here + nxt) / 2, 4), code))
    if front:
        out.append((round(latency_ms[front[0]] * 0.8, 4), None))
    return sorted(out, key=lambda b: -b[0])


def export_embedded(out: Path, recal_samples: int = 512, log: Log = print, iterate: Iterate | None = None) -> int:
    """Step 1: every sub-network of the embedded model into ``out``, recalibrated and
    verified (also what ``benchmarks/bench_timing_noise.py`` measures). Returns the count."""
    from adn_edge.data import EMBEDDED_DATASET, EMBEDDED_NAME, load_embedded
    from adn_edge.export import Exporter, ExportOptions
    from adn_edge.train.recalibrate import batches_from_data

    model, ckpt = load_embedded()
    log(f"1/5 export: {EMBEDDED_NAME} ({model.arch}, {model.num_skippable_stages} skippable stages, "
        f"{2 ** model.num_skippable_stages} sub-networks) -> {out}, BN recalibrated per sub-network "
        f"on {recal_samples} training images of builtin:{EMBEDDED_DATASET}")
    batches = batches_from_data(f"builtin:{EMBEDDED_DATASET}", model.arch, recal_samples)
    exporter = Exporter(model, out, ckpt.source_record(),
                        ExportOptions(recalibration=batches, recalibration_source=f"builtin:{EMBEDDED_DATASET}"))
    exported = exporter.export("all", iterate=iterate)
    worst = max(r.parity["onnx"].rel_err for r in exported)
    log(f"    {len(exported)} graphs verified against PyTorch (worst relative error {worst:.1e})")
    return len(exported)


def run_demo(out: str | Path = "engines/demo", iterations: int = 400, recal_samples: int = 512,
             threads: int | None = None, log: Log = print, iterate: Iterate | None = None) -> DemoResult:
    from adn_edge.bench import pareto as pareto_mod
    from adn_edge.bench.harness import BenchOptions, bench_threads, run_bench
    from adn_edge.data import EMBEDDED_DATASET
    from adn_edge.modeldir import ModelDir
    from adn_edge.modeldir.pareto import pareto_front
    from adn_edge.runtime import EngineSwitcher
    from adn_edge.train.data import load_builtin
    from adn_edge.train.evaluate import evaluate_directory, preprocess_for_directory, write_eval

    out = Path(out)
    result = DemoResult(out)
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[name] = round(now - clock, 2)
        clock = now

    export_embedded(out, recal_samples, log, iterate)
    lap("export")

    log(f"2/5 eval: every sub-network on the test split of builtin:{EMBEDDED_DATASET} (ONNX Runtime)")
    opened = ModelDir.open(out)  # read and validated once, handed to every step below
    test = load_builtin(EMBEDDED_DATASET, "test", preprocess_for_directory(opened))
    ev = evaluate_directory(opened, test, "all", backend="onnxruntime", iterate=iterate)
    write_eval(out, ev, merge=False)
    result.accuracy = {c: a.top1 for c, a in ev.subnets.items()}
    lo, hi = min(result.accuracy.values()), max(result.accuracy.values())
    log(f"    top-1 {lo:.1f}% .. {hi:.1f}% over {len(result.accuracy)} sub-networks ({len(test)} images)")
    lap("eval")

    bench_opts = BenchOptions(device="cpu", power="none", iterations=iterations, warmup_s=0.2, threads=threads)
    used = bench_threads(bench_opts, "onnxruntime")
    log(f"3/5 bench: latency of every sub-network on this CPU (ONNX Runtime, batch 1, {used} "
        f"thread{'s' if used != 1 else ''}{'' if threads else ': the bench default, usable CPUs - 1'})")
    result.bench = run_bench(opened, bench_opts, iterate=iterate)
    subs = result.bench["subnets"]
    cvs = [e["latency_cv"] for e in subs.values()]
    calls = min(e["iterations"] for e in subs.values())
    rounds = result.bench["settings"]["rounds_used"]
    log(f"    {calls} calls each" + (f", interleaved in {rounds} rounds of {calls // rounds}" if rounds > 1 else ""))
    log(f"    p50 {min(e['latency_ms']['p50'] for e in subs.values()):.3f} .. "
        f"{max(e['latency_ms']['p50'] for e in subs.values()):.3f} ms, p99 "
        f"{min(e['latency_ms']['p99'] for e in subs.values()):.3f} .. "
        f"{max(e['latency_ms']['p99'] for e in subs.values()):.3f} ms, coefficient of variation "
        f"{100 * min(cvs):.1f} .. {100 * max(cvs):.1f} %")
    result.noise = (result.bench.get("noise") or {}).get("text")
    if result.noise:
        log(f"    warning: {result.noise}")
    lap("bench")

    # Budgets are deadlines, so the policy compares them with tail latency (p99).
    lat = {c: e["latency_ms"]["p99"] for c, e in subs.items()}
    result.pareto = pareto_front(lat, result.accuracy)
    log(f"4/5 switch: an EngineSwitcher holds all sub-networks; one budget between each two of the "
        f"{len(result.pareto)} Pareto-optimal ones ({', '.join(result.pareto)}), one below them all; "
        f"each picks the most accurate that fits, switches, and classifies one test image (label "
        f"{int(test[0][1])})")
    if len(result.pareto) < 3:  # the model's doing, not the demo's: say so instead of implying a trade-off
        best, worst = max(result.accuracy.values()), min(result.accuracy.values())
        images = round((best - worst) * len(test) / 100)
        one = len(result.pareto) == 1
        result.note = (f"only {len(result.pareto)} sub-network{'' if one else 's'} {'is' if one else 'are'} "
                       f"Pareto-optimal here: {result.pareto[0]} is the fastest"
                       + (f" and as accurate as any ({best:.2f}%)" if one else "")
                       + f"; the top-1 accuracies differ by {images} of {len(test)} test images at most, so "
                       "this model offers little to trade latency for. A model whose deeper sub-networks are "
                       "more accurate gets one budget per sub-network on its front.")
        log(f"    note: {result.note}")
    options: dict[str, Any] = {"threads": used} if used else {}
    with EngineSwitcher.open(opened, backend="onnxruntime", subnets="all", **options) as sw:
        image = test[0][0].numpy()[None]
        log(f"    {'budget ms':>9} -> {'chosen':6} {'p50 ms':>7} {'p99 ms':>7} {'CV %':>5} {'top-1 %':>7} "
            f"{'switch':>7} pred")
        for budget, _ in spaced_budgets(result.pareto, lat):
            code = sw.fastest_within(latency_ms=budget)
            t = time.perf_counter()
            sw.switch(code)
            switch_us = (time.perf_counter() - t) * 1e6
            pred = int(np.argmax(sw.infer(image)))
            e = subs[code]
            fits = lat[code] <= budget
            result.switches.append({"budget_ms": budget, "subnet": code, "fits": fits, "switch_us": round(switch_us, 1),
                                    "p50_ms": e["latency_ms"]["p50"], "p99_ms": lat[code],
                                    "latency_cv": e["latency_cv"], "top1": result.accuracy.get(code),
                                    "prediction": pred})
            log(f"    {budget:9.3f} -> {code:6} {e['latency_ms']['p50']:7.3f} {lat[code]:7.3f} "
                f"{100 * e['latency_cv']:5.1f} {result.accuracy.get(code, float('nan')):7.2f} "
                f"{switch_us:4.0f} us {pred:4d}" + ("" if fits else "  nothing fits: the closest"))
    lap("switch")

    log("5/5 Pareto: the sub-networks worth switching between")
    dataset = f"{ev.dataset} ({ev.split}, {len(test)} images)"
    result.plot = pareto_mod.plot(result.bench, out / "pareto.png", accuracy=result.accuracy, dataset=dataset)
    lap("pareto")
    result.seconds["total"] = round(sum(result.seconds.values()), 2)
    return result
