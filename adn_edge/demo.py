"""``adn-edge demo``: the whole pipeline on the embedded model, on the CPU, in ~a minute.

Steps (each the same library call a user would make):

1. export every sub-network of the embedded ResNet-ADN with the recommended recipe
   (per-sub-network BatchNorm recalibration on the built-in training split), each
   graph verified against PyTorch;
2. evaluate every exported graph on the built-in test split (ONNX Runtime);
3. benchmark every sub-network on the CPU;
4. open an EngineSwitcher over all of them and let the latency budget move:
   each budget picks the most accurate sub-network that fits, switches, infers;
5. print the Pareto table and write the plot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Log = Callable[[str], None]
Iterate = Callable[[Sequence[str], str], Any]


@dataclass
class DemoResult:
    directory: Path
    seconds: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    switches: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    plot: Path | None = None

    def summary(self) -> dict[str, Any]:
        subs = self.bench.get("subnets", {})
        return {
            "directory": str(self.directory), "seconds": self.seconds, "plot": str(self.plot) if self.plot else None,
            "pareto": self.pareto, "switches": self.switches,
            "subnets": {c: {"top1": self.accuracy.get(c), "gmacs": e.get("gmacs"),
                            "latency_ms_p50": e["latency_ms"]["p50"], "latency_ms_p99": e["latency_ms"]["p99"]} for c, e in subs.items()},
        }


def run_demo(out: str | Path = "engines/demo", iterations: int = 100, recal_samples: int = 512,
             threads: int | None = None, log: Log = print, iterate: Iterate | None = None) -> DemoResult:
    from adn_edge.bench import pareto as pareto_mod
    from adn_edge.bench.harness import BenchOptions, run_bench
    from adn_edge.data import EMBEDDED_NAME, load_embedded
    from adn_edge.export import Exporter, ExportOptions
    from adn_edge.modeldir import ModelDir
    from adn_edge.modeldir.pareto import pareto_front
    from adn_edge.runtime import EngineSwitcher
    from adn_edge.train.data import load_builtin
    from adn_edge.train.evaluate import evaluate_directory, preprocess_for_directory, write_eval
    from adn_edge.train.recalibrate import batches_from_data

    out = Path(out)
    result = DemoResult(out)
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[name] = round(now - clock, 2)
        clock = now

    model, ckpt = load_embedded()
    log(f"1/5 export: {EMBEDDED_NAME} ({model.arch}, {model.num_skippable_stages} skippable stages, "
        f"{2 ** model.num_skippable_stages} sub-networks) -> {out}, BN recalibrated per sub-network "
        f"on {recal_samples} built-in training images")
    batches = batches_from_data("builtin", model.arch, recal_samples)
    exporter = Exporter(model, out, ckpt.source_record(),
                        ExportOptions(recalibration=batches, recalibration_source="builtin"))
    exported = exporter.export("all", iterate=iterate)
    worst = max(r.parity["onnx"].rel_err for r in exported)
    log(f"    {len(exported)} graphs verified against PyTorch (worst relative error {worst:.1e})")
    lap("export")

    log("2/5 eval: every sub-network on the built-in test split (ONNX Runtime)")
    opened = ModelDir.open(out)  # read and validated once, handed to every step below
    test = load_builtin("digits", "test", preprocess_for_directory(opened))
    ev = evaluate_directory(opened, test, "all", backend="onnxruntime", iterate=iterate)
    write_eval(out, ev, merge=False)
    result.accuracy = {c: a.top1 for c, a in ev.subnets.items()}
    lo, hi = min(result.accuracy.values()), max(result.accuracy.values())
    log(f"    top-1 {lo:.1f}% .. {hi:.1f}% over {len(result.accuracy)} sub-networks ({len(test)} images)")
    lap("eval")

    log("3/5 bench: latency of every sub-network on this CPU (ONNX Runtime, batch 1)")
    result.bench = run_bench(opened, BenchOptions(device="cpu", power="none", iterations=iterations,
                                               warmup_s=0.2, threads=threads), iterate=iterate)
    lap("bench")

    log("4/5 switch: an EngineSwitcher holds all sub-networks; the latency budget moves")
    with EngineSwitcher.open(opened, backend="onnxruntime", subnets="all") as sw:
        # Budgets are deadlines, so the policy compares them with tail latency (p99).
        lat = {c: e["latency_ms"]["p99"] for c, e in result.bench["subnets"].items()}
        budgets = sorted({round(v * 1.05, 3) for v in (min(lat.values()), float(np.median(list(lat.values()))),
                                                         max(lat.values()))}, reverse=True)
        image = test[0][0].numpy()[None]
        for budget in budgets:
            code = sw.fastest_within(latency_ms=budget)
            t = time.perf_counter()
            sw.switch(code)
            switch_us = (time.perf_counter() - t) * 1e6
            pred = int(np.argmax(sw.infer(image)))
            result.switches.append({"budget_ms": budget, "subnet": code, "switch_us": round(switch_us, 1),
                                    "p99_ms": lat[code], "top1": result.accuracy.get(code), "prediction": pred})
            log(f"    budget {budget:6.3f} ms -> {code} (p99 {lat[code]:.3f} ms, top-1 "
                f"{result.accuracy.get(code, float('nan')):.1f}%), switched in {switch_us:.0f} us, "
                f"predicts {pred} (label {int(test[0][1])})")
    lap("switch")

    log("5/5 Pareto: the sub-networks worth switching between")
    result.pareto = pareto_front(lat, result.accuracy)
    result.plot = pareto_mod.plot(result.bench, out / "pareto.png", accuracy=result.accuracy)
    lap("pareto")
    result.seconds["total"] = round(sum(result.seconds.values()), 2)
    return result
