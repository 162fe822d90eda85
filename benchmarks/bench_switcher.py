"""EngineSwitcher on ResNet50-ADN (all 16 sub-networks resident): issue 3's benchmark list.

Measures, with the ONNX Runtime backend on this machine's CPU:

1. ``switch()`` latency p50/p99 (floor: p99 <= 50 us) against re-creating an ONNX
   Runtime session for the new sub-network, the naive alternative (floor: >= 1000x);
2. the first inference after a switch against steady state (cold-cache cost);
3. throughput switching before every inference against never switching, over the
   same mix of sub-networks (floor: >= 95 %), measured twice: in alternating
   blocks (switch-every vs grouped by sub-network), and as a paired, interleaved
   estimate in which each step randomly repeats or switches, so that the load of
   a shared machine hits both conditions alike (the blocks swing by +-20 % from
   round to round on a busy 2-core host; the floor is judged on the paired one);
4. resident memory of all 16 sessions against one (floor: <= 2.5x with sharing),
   without sharing, with plain ONNX Runtime sessions, and in segmented mode; each
   configuration in a fresh process, after every sub-network ran once;
5. segmented against monolithic latency per sub-network.

Weights are random but well-conditioned (latency and memory do not depend on
them). The model directory is exported once into a temporary folder and reused.

    python benchmarks/bench_switcher.py [--arch resnet50] [--threads 1] [--workdir DIR]

Prints a table and writes benchmarks/results/switcher_<arch>_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS,
    default_workdir,
    ensure_model_dir,
    environment,
    median,
    percentile,
    run_json_subprocess,
    timed_ms,
)

from adn_edge.fileio import write_json  # noqa: E402
from adn_edge.runtime import EngineSwitcher  # noqa: E402

MEMORY_SCRIPT = r"""
import json, sys
import numpy as np
mode, directory, subnets, threads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])

import onnxruntime as ort
import adn_edge.runtime
from adn_edge.modeldir import manifest
from adn_edge.runtime import EngineSwitcher
from adn_edge.runtime.backend import resident_bytes

def rss():
    return resident_bytes() / 2**20
m = manifest.load(directory)
shape = [1 if d is None else d for d in m["input"]["shape"]]
x = np.zeros(shape, np.float32)
base = rss()
out = {"mode": mode}
if mode.startswith("naive"):
    # what a user writes without adn-edge: one default InferenceSession per graph file
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    codes = list(m["subnets"]) if subnets == "all" else subnets
    sessions = [ort.InferenceSession(str(f"{directory}/{m['subnets'][c]['files']['onnx']['path']}"), so,
                                     providers=["CPUExecutionProvider"]) for c in codes]
    for s in sessions:
        s.run(None, {"input": x})
    out.update(sessions=len(sessions))
else:
    opts = {"threads": threads}
    if "noshare" in mode:
        opts.update(share_weights=False, share_arena=False)
    if "noarena" in mode:
        opts.update(share_arena=False)
    sw = EngineSwitcher.open(directory, backend="onnxruntime", subnets=subnets, segmented=mode.startswith("seg"),
                             **opts)
    for code in sw.codes:
        sw.infer(x, code)
    eng = sw.describe()["engine"]
    out.update(sessions=eng.get("segments", len(sw.codes)), sharing=eng["sharing"], graph_bytes=eng["graph_bytes"])
out["rss_mb"] = rss() - base
print(json.dumps(out))
"""


def measure_switch(sw: EngineSwitcher, n: int) -> dict[str, float]:
    rng = random.Random(0)
    codes = [rng.choice(sw.codes) for _ in range(n)]  # canonical codes, as a control loop passes them
    clock = time.perf_counter_ns
    samples = []
    switch = sw.switch
    for code in codes:
        t0 = clock()
        switch(code)
        samples.append(clock() - t0)
    overhead = []
    for _ in range(2000):
        t0 = clock()
        overhead.append(clock() - t0)
    us = [s / 1e3 for s in samples]
    return {"n": n, "p50_us": percentile(us, 50), "p99_us": percentile(us, 99), "p999_us": percentile(us, 99.9),
            "max_us": max(us), "mean_us": sum(us) / n, "timer_overhead_us": median([o / 1e3 for o in overhead])}


def measure_recreate(directory: Path, codes: list[str], threads: int) -> dict[str, Any]:
    """The naive switch: build a session for the new sub-network when asked."""
    import onnxruntime as ort

    from adn_edge.modeldir import manifest

    m = manifest.load(directory)
    times = []
    for code in codes:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        path = str(directory / m["subnets"][code]["files"]["onnx"]["path"])
        t0 = time.perf_counter()
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        times.append((time.perf_counter() - t0) * 1e3)
        del sess
    return {"codes": codes, "ms": [round(t, 2) for t in times], "median_ms": median(times)}


def measure_cold(sw: EngineSwitcher, x: np.ndarray, steady_runs: int) -> dict[str, Any]:
    """Per sub-network: first inference right after switching to it, then steady state."""
    order = list(sw.codes)
    random.Random(1).shuffle(order)
    rows = {}
    for i, code in enumerate(order):
        prev = order[i - 1]
        sw.switch(prev)
        for _ in range(2):
            sw.infer(x)  # the previous sub-network is hot in the caches
        sw.switch(code)
        first = timed_ms(lambda: sw.infer(x))
        steady = [timed_ms(lambda: sw.infer(x)) for _ in range(steady_runs)]
        rows[code] = {"first_ms": round(first, 3), "steady_ms": round(median(steady), 3),
                      "ratio": round(first / median(steady), 3)}
    ratios = [r["ratio"] for r in rows.values()]
    return {"per_subnet": rows, "median_ratio": round(median(ratios), 3), "max_ratio": max(ratios),
            "mean_extra_ms": round(sum(r["first_ms"] - r["steady_ms"] for r in rows.values()) / len(rows), 3)}


def measure_throughput(sw: EngineSwitcher, x: np.ndarray, reps: int, rounds: int) -> dict[str, Any]:
    """Same multiset of inferences (every code ``reps`` times), grouped by code (one
    switch per group) or interleaved (a switch before every inference)."""
    codes = list(sw.codes)
    grouped = [c for c in codes for _ in range(reps)]
    interleaved = [c for _ in range(reps) for c in codes]
    results: dict[str, list[float]] = {"no_switching": [], "switch_every_inference": []}

    def run(seq: list[str], switch_each: bool) -> float:
        t0 = time.perf_counter()
        last = None
        for code in seq:
            if switch_each or code != last:
                sw.switch(code)
                last = code
            sw.infer(x)
        return len(seq) / (time.perf_counter() - t0)

    for r in range(rounds):  # alternate, so that drifting machine load hits both alike
        pair = [("no_switching", grouped, False), ("switch_every_inference", interleaved, True)]
        for name, seq, each in pair if r % 2 == 0 else reversed(pair):
            results[name].append(run(seq, each))
    total = {k: len(v) / sum(1 / ips for ips in v) for k, v in results.items()}  # all inferences / all time
    ratios = [s / n for s, n in zip(results["switch_every_inference"], results["no_switching"], strict=True)]
    return {"inferences_per_round": len(grouped), "rounds": rounds,
            "ips": {k: [round(v, 3) for v in vals] for k, vals in results.items()},
            "ips_total": {k: round(v, 3) for k, v in total.items()},
            "ratio_total": round(total["switch_every_inference"] / total["no_switching"], 4),
            "ratio_median_round": round(median(ratios), 4)}


def measure_switch_cost(sw: EngineSwitcher, x: np.ndarray, n: int) -> dict[str, Any]:
    """The same question as measure_throughput, asked so that machine load cancels out.

    One long random sequence in which each inference either repeats the previous
    sub-network or switches to another one (even odds), so that both conditions
    are sampled under the same, drifting, load of a shared machine. Each step times
    ``switch`` + ``infer`` (switch is called in both conditions). The throughput
    ratio over the equal mix of all sub-networks is sum(mean latency when
    repeated) / sum(mean latency when switched).
    """
    codes = list(sw.codes)
    rng = random.Random(2)
    lat: dict[str, dict[str, list[float]]] = {c: {"same": [], "switched": []} for c in codes}
    prev = codes[0]
    sw.switch(prev)
    sw.infer(x)
    for _ in range(n):
        if rng.random() < 0.5:
            code, kind = prev, "same"
        else:
            code, kind = rng.choice([c for c in codes if c != prev]), "switched"
        t0 = time.perf_counter()
        sw.switch(code)
        sw.infer(x)
        lat[code][kind].append((time.perf_counter() - t0) * 1e3)
        prev = code
    both = [c for c in codes if lat[c]["same"] and lat[c]["switched"]]
    same = sum(float(np.mean(lat[c]["same"])) for c in both)
    switched = sum(float(np.mean(lat[c]["switched"])) for c in both)
    return {"steps": n, "subnets_compared": len(both),
            "samples": {k: sum(len(lat[c][k]) for c in both) for k in ("same", "switched")},
            "per_subnet_ms": {c: {k: round(float(np.mean(v)), 3) for k, v in lat[c].items() if v} for c in codes},
            "throughput_ratio": round(same / switched, 4)}


def measure_memory(directory: Path, threads: int) -> dict[str, Any]:
    configs = [
        ("shared_16", "all"), ("shared_1", ["1111"]),
        ("noarena_16", "all"),
        ("noshare_16", "all"), ("noshare_1", ["1111"]),
        ("naive_16", "all"), ("naive_1", ["1111"]),
        ("seg_shared_16", "all"), ("seg_noshare_16", "all"),
    ]
    out = {}
    for mode, subnets in configs:
        r = run_json_subprocess(MEMORY_SCRIPT, mode, str(directory), json.dumps(subnets), str(threads))
        out[mode] = r
        print(f"  memory {mode:15s} {r['rss_mb']:8.1f} MB  ({r['sessions']} sessions)", flush=True)
    mb = {k: v["rss_mb"] for k, v in out.items()}
    one_model = out["shared_1"]["sharing"]["bytes_unique"]
    return {
        "configs": out,
        "rss_mb": {k: round(v, 1) for k, v in mb.items()},
        "ratio_16_vs_1_shared": round(mb["shared_16"] / mb["shared_1"], 3),
        "ratio_16_shared_vs_1_naive": round(mb["shared_16"] / mb["naive_1"], 3),
        "ratio_16_vs_1_noshare": round(mb["noshare_16"] / mb["noshare_1"], 3),
        "ratio_16_vs_1_naive": round(mb["naive_16"] / mb["naive_1"], 3),
        "ratio_segmented_shared_vs_1_shared": round(mb["seg_shared_16"] / mb["shared_1"], 3),
        "ratio_segmented_noshare_vs_1_noshare": round(mb["seg_noshare_16"] / mb["noshare_1"], 3),
        "arena_sharing_saves_mb": round(mb["noarena_16"] - mb["shared_16"], 1),
        "weights": {
            "one_model_mb": round(one_model / 2**20, 1),
            "monolithic_unique_mb": round(out["shared_16"]["sharing"]["bytes_unique"] / 2**20, 1),
            "monolithic_referenced_mb": round(out["shared_16"]["sharing"]["bytes_referenced"] / 2**20, 1),
            "segmented_unique_mb": round(out["seg_shared_16"]["sharing"]["bytes_unique"] / 2**20, 1),
            "segmented_referenced_mb": round(out["seg_shared_16"]["sharing"]["bytes_referenced"] / 2**20, 1),
        },
    }


def measure_segmented(mono: EngineSwitcher, seg: EngineSwitcher, x: np.ndarray, runs: int) -> dict[str, Any]:
    rows = {}
    for code in mono.codes:
        a, b = [], []
        for _ in range(runs):  # interleaved: same machine state for both
            a.append(timed_ms(lambda: mono.infer(x, code)))
            b.append(timed_ms(lambda: seg.infer(x, code)))
        rows[code] = {"monolithic_ms": round(median(a), 3), "segmented_ms": round(median(b), 3),
                      "overhead": round(median(b) / median(a) - 1, 4)}
    overheads = [r["overhead"] for r in rows.values()]
    return {"per_subnet": rows, "median_overhead": round(median(overheads), 4),
            "max_overhead": max(overheads), "min_overhead": min(overheads)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--switches", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=2, help="throughput: inferences per sub-network per round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--paired", type=int, default=256, help="steps of the paired switch-cost measurement")
    ap.add_argument("--runs", type=int, default=5, help="steady/segmented runs per sub-network")
    args = ap.parse_args()

    directory = ensure_model_dir(args.arch, args.workdir or default_workdir(args.arch))
    env = environment(args.threads)
    print(f"model directory {directory}; {env['cpu']}, {env['os_cpu_count']} CPUs, load {env['loadavg_start']}")
    t_start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "switcher", "arch": args.arch, "backend": "onnxruntime", "device": "cpu",
                              "batch": 1, "env": env}

    sw = EngineSwitcher.open(directory, backend="onnxruntime", subnets="all", threads=args.threads, segmented=False)
    result["open_s"] = sw.describe()["opened_s"]
    shape = [1 if d is None else d for d in sw.describe()["input"]["shape"]]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)

    print("switch() latency ...", flush=True)
    sw_stats = measure_switch(sw, args.switches)
    recreate = measure_recreate(directory, [sw.codes[0], sw.codes[7], sw.codes[-1]], args.threads)
    result["switch"] = {**{k: round(v, 4) if isinstance(v, float) else v for k, v in sw_stats.items()},
                        "recreate_session": recreate,
                        "recreate_over_switch_p99": round(recreate["median_ms"] * 1e3 / sw_stats["p99_us"])}

    print("first inference after a switch ...", flush=True)
    result["cold_after_switch"] = measure_cold(sw, x, args.runs)

    print("throughput with/without switching ...", flush=True)
    result["throughput"] = measure_throughput(sw, x, args.reps, args.rounds)

    print("throughput, paired (same vs switched, interleaved) ...", flush=True)
    result["switch_cost_paired"] = measure_switch_cost(sw, x, args.paired)

    print("segmented vs monolithic ...", flush=True)
    with EngineSwitcher.open(directory, backend="onnxruntime", segmented=True, threads=args.threads) as seg:
        result["segmented_latency"] = measure_segmented(sw, seg, x, args.runs)
    sw.close()

    print("resident memory (fresh process per configuration) ...", flush=True)
    result["memory"] = measure_memory(directory, args.threads)

    s, m, t = result["switch"], result["memory"], result["throughput"]
    p = result["switch_cost_paired"]
    floors = {
        "switch_p99_le_50us": s["p99_us"] <= 50,
        "recreate_ge_1000x_switch": s["recreate_over_switch_p99"] >= 1000,
        "throughput_switching_ge_95pct": p["throughput_ratio"] >= 0.95,
        "memory_16_le_2_5x_one": m["ratio_16_vs_1_shared"] <= 2.5,
    }
    result["floors"] = floors
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["env"]["loadavg_end"] = list(os.getloadavg())
    result["command"] = (f"python benchmarks/bench_switcher.py --arch {args.arch} --threads {args.threads} "
                         f"--switches {args.switches} --reps {args.reps} --rounds {args.rounds} --runs {args.runs} "
                         f"--paired {args.paired}")

    c, g = result["cold_after_switch"], result["segmented_latency"]
    w = m["weights"]
    rows = [
        ("switch() p50 / p99 / max", f"{s['p50_us']:.2f} / {s['p99_us']:.2f} / {s['max_us']:.1f} us", "p99 <= 50 us"),
        ("re-create session (median)", f"{recreate['median_ms']:.0f} ms = {s['recreate_over_switch_p99']:,}x p99",
         ">= 1000x"),
        ("first infer after switch", f"{c['median_ratio']:.2f}x steady (median), max {c['max_ratio']:.2f}x, "
                                     f"+{c['mean_extra_ms']:.1f} ms mean", "reported"),
        ("throughput, paired steps", f"{p['throughput_ratio']:.3f} (switched vs repeated, {p['samples']['same']}"
                                     f"+{p['samples']['switched']} interleaved inferences)", ">= 0.95"),
        ("throughput, blocks", f"{t['ips_total']['switch_every_inference']:.2f} / {t['ips_total']['no_switching']:.2f}"
                               f" ips = {t['ratio_total']:.3f} (rounds {t['ips']['no_switching']} vs "
                               f"{t['ips']['switch_every_inference']})", "reported"),
        ("memory 16 vs 1 (shared)", f"{m['rss_mb']['shared_16']:.0f} / {m['rss_mb']['shared_1']:.0f} MB = "
                                    f"{m['ratio_16_vs_1_shared']:.2f}x", "<= 2.5x"),
        ("memory 16 vs 1 (no sharing)", f"{m['rss_mb']['noshare_16']:.0f} / {m['rss_mb']['noshare_1']:.0f} MB = "
                                        f"{m['ratio_16_vs_1_noshare']:.2f}x", "reported"),
        ("memory 16 vs 1 (plain ORT)", f"{m['rss_mb']['naive_16']:.0f} / {m['rss_mb']['naive_1']:.0f} MB = "
                                       f"{m['ratio_16_vs_1_naive']:.2f}x", "reported"),
        ("memory segmented (8 graphs)", f"{m['rss_mb']['seg_shared_16']:.0f} MB shared, "
                                        f"{m['rss_mb']['seg_noshare_16']:.0f} MB unshared", "reported"),
        ("arena sharing saves", f"{m['arena_sharing_saves_mb']:.0f} MB", "reported"),
        ("unique weights (1 model)", f"{w['one_model_mb']:.0f} MB; 16 graphs {w['monolithic_unique_mb']:.0f} MB "
                                     f"unique of {w['monolithic_referenced_mb']:.0f} MB; segments "
                                     f"{w['segmented_unique_mb']:.0f} of {w['segmented_referenced_mb']:.0f} MB",
         "reported"),
        ("segmented vs monolithic", f"{100 * g['median_overhead']:+.1f} % median "
                                    f"({100 * g['min_overhead']:+.1f} .. {100 * g['max_overhead']:+.1f} %)",
         "reported"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, floor in rows:
        print(f"{name:<{width}}  {value:<70}  {floor}")
    print("floors:", ", ".join(f"{k}={'ok' if v else 'MISSED'}" for k, v in floors.items()))

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"switcher_{args.arch}_cpu.json"
    write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
