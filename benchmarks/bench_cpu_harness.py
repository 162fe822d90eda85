"""The whole ``adn-edge bench --device cpu`` of ResNet50-ADN (16 sub-networks), with defaults.

Issue 4's floor: it finishes in <= 5 minutes on 2 cores with default settings
(>= 100 timed calls per sub-network, warm-up 10 calls / 0.5 s). Exports the 16
graphs first (random well-conditioned weights; latency does not depend on them),
then runs exactly what the CLI runs, and records the wall time and the report.

Threads are the bench's CPU default (:func:`adn_edge.bench.threads.default_cpu_threads`:
usable CPUs - 1, at least 1, chosen by ``benchmarks/bench_timing_noise.py``), recorded
per mode with the 1-minute load average before and after: a run on a busy machine is
marked as such instead of passing for a measurement.

    python benchmarks/bench_cpu_harness.py [--arch resnet50] [--out DIR]

Writes benchmarks/results/bench_cpu_<arch>.json (the bench report plus timing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from adn_edge.bench.harness import BenchOptions, run_bench
from adn_edge.export import Exporter
from adn_edge.fileio import write_json
from adn_edge.models import create_model, get_spec
from adn_edge.models.random_weights import randomize

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--out", type=Path, default=None, help="model directory (default: a temporary one)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    if not (out / "manifest.json").exists():
        model = randomize(create_model(args.arch), input_size=get_spec(args.arch).input_size)
        Exporter(model, out, {"path": None, "sha256": "random", "weights": "random"}).export("all")
    results = {}
    # Default (memory-lean: one copy of every shared weight for all 16 sessions), then
    # ONNX Runtime's fastest settings (per-session optimised graphs, weights not shared).
    for mode, backend_options in (("shared-weights (default)", {}),
                                  ("fast", {"graph_optimization": "all", "share_weights": False, "prepack": True})):
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        report = run_bench(out, BenchOptions(device="cpu", backend_options=backend_options))
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        rows = {c: {"p50": e["latency_ms"]["p50"], "p99": e["latency_ms"]["p99"], "cv": e["latency_cv"],
                    "iterations": e["iterations"], "gmacs": e["gmacs"]} for c, e in report["subnets"].items()}
        threads = report["settings"]["threads"]
        print(f"-- {mode}: -O {backend_options}, {threads} thread(s) ({report['settings'].get('threads_rule') or 'asked'}), "
              f"load average {load_before:.2f} -> {load_after:.2f}")
        for c, r in rows.items():
            print(f"{c}  {r['gmacs']:.3f} GMACs  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                  f"cv {100 * r['cv']:4.1f}%  n={r['iterations']}")
        print(f"whole bench (16 sub-networks, defaults): {wall:.1f} s")
        if report.get("noise", {}).get("text"):
            print(report["noise"]["text"])
        results[mode] = {"backend_options": backend_options, "wall_s": round(wall, 1), "summary": rows,
                         "threads": threads, "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
                         "report": report}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_cpu_{args.arch}.json"
    write_json(path, {"benchmark": "cpu-bench-harness", "arch": args.arch,
                      "command": f"python benchmarks/bench_cpu_harness.py --arch {args.arch}",
                      "cli_equivalent": "adn-edge bench DIR --device cpu [-O graph_optimization=all "
                                        "-O share_weights=false -O prepack=true]",
                      "modes": results})
    print(json.dumps({m: r["wall_s"] for m, r in results.items()}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
