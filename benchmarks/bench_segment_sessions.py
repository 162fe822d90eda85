"""Segments as one session or as a chain of sessions: a paired comparison in one process.

``bench_cpu_modes.py`` runs every configuration in its own process, which is right for
memory but leaves latency differences of a few percent inside this VM's
round-to-round noise (5-10 %). Here the candidates live in ONE process and run
alternately, inference by inference (A, B, C, A, B, C, ...), so that whatever else the
machine does hits them alike; the figure of merit is the median of the per-iteration
ratios, with its interquartile range:

* ``mono``   monolithic graphs at ``all`` (unshared, pre-packed): the reference
* ``chain``  segment graphs at ``all``, a chain of sessions (``single_session=False``)
* ``one``    segment graphs at ``all`` as one session (the CPU default)

All with idle threads sleeping (each session's own pool, the default). Super- and
base-net, FP32 and, where the directory has them, INT8 segments (``--int8``).

    python benchmarks/bench_segment_sessions.py [--threads 1 2] [--runs 200]
    python benchmarks/bench_segment_sessions.py --dir DIR --label corrected

``--dir`` measures an existing directory instead of the random-weight export, e.g. one
written by ``adn-edge export --segments --recalibrate`` (``bench_segment_corrections.py``
leaves one in ``WORK/r50_recal``): there ``mono`` is the recalibrated monolithic graphs
and ``chain``/``one`` the corrected segments, which feed each sub-network's BatchNorm
corrections as inputs.

Prints a table and writes ``benchmarks/results/segment_sessions_<arch>[_<label>].json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, default_workdir, ensure_model_dir, environment, run_json_subprocess  # noqa: E402

from adn_edge.fileio import write_json  # noqa: E402

SCRIPT = r"""
import json, sys, time
import numpy as np
from adn_edge.modeldir import manifest
from adn_edge.runtime import EngineSwitcher
directory, threads, runs, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = manifest.load(directory)
S = m["num_stages"]
codes = ["1" * S, "0" * S]
x = np.random.default_rng(0).standard_normal([1, *m["input"]["shape"][1:]], dtype=np.float32)
opts = dict(backend="onnxruntime", subnets=codes, threads=threads, precision=precision, graph_optimization="all",
            share_weights=False, prepack=True, spinning=False)
candidates = {
    "mono": EngineSwitcher.open(directory, segmented=False, **opts),
    "chain": EngineSwitcher.open(directory, segmented=True, single_session=False, **opts),
    "one": EngineSwitcher.open(directory, segmented=True, single_session=True, **opts),
}
for sw in candidates.values():
    for c in codes:
        for _ in range(5):
            sw.infer(x, c)
samples = {name: {c: [] for c in codes} for name in candidates}
for i in range(runs):
    for c in codes:
        for name, sw in candidates.items():
            t = time.perf_counter()
            sw.infer(x, c)
            samples[name][c].append((time.perf_counter() - t) * 1e3)
print(json.dumps({"samples": samples}))
"""


def summarise(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for role, idx in (("super", 0), ("base", 1)):
        code = list(samples["mono"])[idx]
        ref = np.array(samples["mono"][code])
        row: dict[str, Any] = {}
        for name, by in samples.items():
            v = np.array(by[code])
            row[f"{name}_p50_ms"] = round(float(np.median(v)), 3)
            if name != "mono":
                r = v / ref
                row[f"{name}/mono"] = [round(float(q), 3) for q in np.percentile(r, [25, 50, 75])]
        r = np.array(samples["one"][code]) / np.array(samples["chain"][code])
        row["one/chain"] = [round(float(q), 3) for q in np.percentile(r, [25, 50, 75])]
        out[role] = row
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--int8", action="store_true", help="also the INT8 graphs (adn-edge quantize [--segments])")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--dir", type=Path, default=None, help="an existing model directory with segments")
    ap.add_argument("--label", default=None, help="suffix of the JSON's name (with --dir)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.label and args.dir is None:
        ap.error("--label names the JSON of a --dir run; give --dir too")
    if args.dir is not None:
        from adn_edge.modeldir import manifest

        directory, args.arch = args.dir, manifest.load(args.dir)["arch"]
    else:
        directory = ensure_model_dir(args.arch, args.workdir or default_workdir(args.arch))
    t0 = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    for precision in ["fp32"] + (["int8"] if args.int8 else []):
        for threads in args.threads:
            res = run_json_subprocess(SCRIPT, str(directory), str(threads), str(args.runs), precision)
            rows[f"{precision}, {threads} thread{'s' if threads > 1 else ''}"] = summarise(res["samples"])
            print(f"[{time.perf_counter() - t0:5.0f}s] {precision} threads {threads}", flush=True)
    record = {"schema": 1, "benchmark": "segment_sessions", "issue": 14, "arch": args.arch,
              "directory": str(directory), "label": args.label,
              "command": "python benchmarks/bench_segment_sessions.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": {**environment(args.threads[0]), "loadavg_end": list(os.getloadavg())},
              "runs": args.runs, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    suffix = f"_{args.label}" if args.label else ""
    write_json(args.out or RESULTS / f"segment_sessions_{args.arch}{suffix}.json", record)
    print(f"\n### {args.arch}-ADN, batch 1, one process, candidates alternating per inference, {args.runs} runs\n")
    print("| precision, threads | net | mono p50 | chain p50 | one p50 | chain/mono (q25 q50 q75) | one/mono | one/chain |")
    print("|---|---|---|---|---|---|---|---|")
    for key, by in rows.items():
        for role, r in by.items():
            print(f"| {key} | {role} | {r['mono_p50_ms']:.1f} | {r['chain_p50_ms']:.1f} | {r['one_p50_ms']:.1f} | "
                  f"{' '.join(map(str, r['chain/mono']))} | {' '.join(map(str, r['one/mono']))} | "
                  f"{' '.join(map(str, r['one/chain']))} |")
    return record


if __name__ == "__main__":
    main()
