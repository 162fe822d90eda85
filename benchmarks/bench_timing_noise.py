"""Timing noise against ONNX Runtime's thread count, on the embedded model, on this CPU.

Why: on a 2-core VM the demo's p99s (its budgets) were ~4.4 ms at a p50 of ~0.3 ms
with ONNX Runtime's default threads, and once 60 ms; with 1 thread 0.22 ms. This
measures p50, p99, max and the coefficient of variation (CV) per thread count, for a
few sub-networks, in the hot loop (back to back, as ``adn-edge bench`` times) and in
a paced loop (one call every 1/hz s, sleeping between, as a robot runs), with the
harness's own timing functions. Thread counts run in alternating order over the
rounds (1, 2, default, then default, 2, 1, ...) so that a drift in background load
does not favour one of them. The 1-minute load average is recorded before and after
each measurement: numbers taken on a busy machine say little, and the JSON says
whether the machine was quiet when the run started (1-minute load < 0.7; during
the run the load includes the measurement's own 1-2 busy threads, so it reads ~1-2
even on an idle machine).

    python benchmarks/bench_timing_noise.py [--dir DIR] [--threads 1,2,0] [--subnets 0000,0101,1111]

``--dir`` defaults to a cached export of the embedded model
(``$TMPDIR/adn-edge-bench/embedded``, exported like ``adn-edge demo`` does when
missing); thread count 0 = ONNX Runtime's default (one per physical core).
Writes benchmarks/results/timing_noise.json with the command that produced it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import RESULTS, environment  # noqa: E402

QUIET = 0.7


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def embedded_dir(path: Path | None) -> Path:
    import tempfile

    from adn_edge.demo import export_embedded

    out = path or Path(tempfile.gettempdir()) / "adn-edge-bench" / "embedded"
    if not (out / "manifest.json").exists():
        export_embedded(out)
    return out


def summarise(seconds: list[float]) -> dict[str, Any]:
    from adn_edge.bench.stats import latency_stats

    s = latency_stats(seconds)
    return {"iterations": s.iterations, "p50_ms": round(s.p50_ms, 4), "p99_ms": round(s.p99_ms, 4),
            "max_ms": round(s.max_ms, 4), "mean_ms": round(s.mean_ms, 4), "cv": round(s.cv, 4),
            "p99_over_p50": round(s.p99_ms / s.p50_ms, 2) if s.p50_ms > 0 else None}


def measure(directory: Path, threads: int, codes: list[str], iterations: int, hz: float,
            paced_iterations: int) -> dict[str, Any]:
    import numpy as np

    from adn_edge.bench.harness import time_calls, time_paced
    from adn_edge.runtime import EngineSwitcher

    options = {"threads": threads} if threads else {}
    out: dict[str, Any] = {}
    with EngineSwitcher.open(directory, backend="onnxruntime", subnets=codes, device="cpu", **options) as sw:
        shape = [1 if d is None else d for d in sw.describe()["input"]["shape"]]
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        for code in codes:
            def call(c: str = code) -> None:
                sw.infer(x, subnet=c)

            before = load1()
            hot, _, _ = time_calls(call, iterations, 0.0, 10, 0.5)
            entry: dict[str, Any] = {"hot": summarise(hot)}
            if hz > 0 and paced_iterations > 0:
                paced, late = time_paced(call, paced_iterations, hz)
                entry["paced"] = {**summarise(paced), "hz": hz, "late_ticks": late}
            entry["loadavg_before"], entry["loadavg_after"] = before, load1()
            out[code] = entry
    return out


def table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    head = (f"{'threads':>8} {'subnet':>6} | {'hot p50':>8} {'hot p99':>8} {'hot max':>8} {'hot CV':>7} | "
            f"{'paced p50':>9} {'paced p99':>9} {'paced CV':>8} | load")
    lines = [head, "-" * len(head)]
    for label, code, e in rows:
        h, p = e["hot"], e.get("paced") or {}
        pfmt = (f"{p['p50_ms']:9.3f} {p['p99_ms']:9.3f} {100 * p['cv']:7.1f}%" if p else f"{'-':>9} {'-':>9} {'-':>8}")
        lines.append(f"{label:>8} {code:>6} | {h['p50_ms']:8.3f} {h['p99_ms']:8.3f} {h['max_ms']:8.3f} "
                     f"{100 * h['cv']:6.1f}% | {pfmt} | {e['loadavg_before']:.2f}->{e['loadavg_after']:.2f}")
    return "\n".join(lines)


def pooled(rounds: list[dict[str, Any]], label: str, code: str, loop: str) -> dict[str, float]:
    """Median over rounds of each statistic (rounds are separate sessions)."""
    import statistics

    vals = [r[label][code][loop] for r in rounds if loop in r[label][code]]
    keys = ("p50_ms", "p99_ms", "max_ms", "cv")
    return {k: round(statistics.median(v[k] for v in vals), 4) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="model directory (default: the embedded model, cached)")
    ap.add_argument("--threads", default="1,2,0", help="thread counts, comma-separated (0: ONNX Runtime default)")
    ap.add_argument("--subnets", default="0000,0101,1111", help="codes, comma-separated")
    ap.add_argument("--iterations", type=int, default=2000, help="hot-loop calls per sub-network")
    ap.add_argument("--hz", type=float, default=20.0, help="paced-loop rate (0: no paced loop)")
    ap.add_argument("--paced-iterations", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "timing_noise.json")
    args = ap.parse_args()

    from adn_edge.bench.threads import RULE, default_cpu_threads, usable_cpus
    from adn_edge.fileio import write_json

    directory = embedded_dir(args.dir)
    counts = [int(t) for t in args.threads.split(",")]
    codes = [c.strip() for c in args.subnets.split(",")]
    start_load = load1()
    rounds: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = counts if r % 2 == 0 else list(reversed(counts))
        res: dict[str, Any] = {}
        for t in order:
            label = str(t) if t else "default"
            res[label] = measure(directory, t, codes, args.iterations, args.hz, args.paced_iterations)
        rounds.append(res)
        rows = [(str(t) if t else "default", c, res[str(t) if t else "default"][c]) for t in counts for c in codes]
        print(f"-- round {r + 1} of {args.rounds} (ms)\n{table(rows)}\n", flush=True)
    labels = [str(t) if t else "default" for t in counts]
    summary = {label: {c: {loop: pooled(rounds, label, c, loop) for loop in ("hot", "paced")
                           if loop in rounds[0][label][c]} for c in codes} for label in labels}
    loads = [e[k] for res in rounds for lab in res.values() for e in lab.values() for k in ("loadavg_before",
                                                                                              "loadavg_after")]
    quiet = start_load < QUIET  # during the run the load counts this measurement's own busy threads
    print("-- median over rounds (ms)")
    for label in labels:
        for c in codes:
            h = summary[label][c]["hot"]
            p = summary[label][c].get("paced") or {}
            print(f"threads {label:>7} {c}: hot p50 {h['p50_ms']:.3f} p99 {h['p99_ms']:.3f} max {h['max_ms']:.3f} "
                  f"CV {100 * h['cv']:.1f}%" + (f" | paced p50 {p['p50_ms']:.3f} p99 {p['p99_ms']:.3f} "
                                                f"CV {100 * p['cv']:.1f}%" if p else ""))
    print(f"load average 1 min: {start_load} at the start ({'quiet' if quiet else 'NOT quiet: other load ran'}), "
          f"{min(loads)}..{max(loads)} during the run (this measurement's own threads included); "
          f"bench default threads here: {default_cpu_threads()} ({RULE})")
    command = "python benchmarks/bench_timing_noise.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_json(args.out, {
        "benchmark": "timing-noise", "command": command.strip(), "directory": str(directory),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - t0, 1),
        "environment": environment(0), "usable_cpus": usable_cpus(),
        "bench_default_threads": default_cpu_threads(), "rule": RULE,
        "settings": {"threads": labels, "subnets": codes, "iterations": args.iterations, "hz": args.hz,
                     "paced_iterations": args.paced_iterations, "rounds": args.rounds},
        "quiet": quiet, "quiet_threshold_load1": QUIET,
        "loadavg_1min": {"start": start_load, "min": min(loads), "max": max(loads),
                         "note": "during the run the load includes this measurement's own busy threads"},
        "summary_median_over_rounds": summary, "rounds": rounds,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
