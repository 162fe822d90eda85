"""ONNX Runtime's shared arena after large batches: what stays resident, before and after.

Issue 13: one ``infer`` of a batch of 8192 kept its activation memory after
``close()``, because the arena shared by every session is process-wide and never
shrinks. This measures resident memory (VmRSS) around one large ``infer`` with

* ``old``: no bound (``max_batch=None, arena_shrink_above=None``: the behaviour before);
* ``shrink``: the arena release only (the first run at most ``arena_shrink_above``
  after larger ones, or ``close()``, shrinks the arena), no chunking;
* ``new``: the defaults (chunks of ``max_batch`` and the release).

Each (setting, batch) runs in a fresh interpreter (the arena is per process), on the
monolithic graph of resnet_tiny's super-net (32x32) with random weights:
RSS before opening, after opening (and one batch-1 run), right after the large
``infer`` (the release is lazy: still grown there), after 200 more batch-1 runs (a
control loop going on: released by the first), and after ``close()``, the input
batch itself not counted. Also timed: the large ``infer``
itself, the median of repeated runs of it when it is at most 1024 (what re-growing a
shrunk arena costs), and batch-1 p50 after it (what the control loop pays). Last,
what the bounds cost a large batch: old and new switchers in one process, runs
interleaved in pairs (batches 1024 and 64), the ratio of new over old.

    python benchmarks/bench_arena.py [--threads 2] [--batches 1,64,1024,8192] [--pairs 16] [--workdir DIR]

Prints a table and writes benchmarks/results/arena.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS,
    default_workdir,
    ensure_model_dir,
    environment,
    run_json_subprocess,
)

from adn_edge.fileio import write_json  # noqa: E402

SETTINGS: dict[str, dict[str, Any]] = {
    "old": {"max_batch": None, "arena_shrink_above": None},
    "shrink": {"max_batch": None},
    "new": {},
}

SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
from adn_edge.backends.onnxruntime.sessions import release_freed_heap
from adn_edge.runtime import EngineSwitcher
from adn_edge.runtime.backend import resident_bytes

directory, batch, threads, options = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
mb = lambda: resident_bytes() / 2**20
one = np.zeros((1, 3, 32, 32), np.float32)
before = mb()
sw = EngineSwitcher.open(directory, backend="onnxruntime", subnets=["1111"], threads=threads, segmented=False,
                         **options)
sw.infer(one)
opened = mb()
x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32), dtype=np.float32)
input_mb = x.nbytes / 2**20
t = time.perf_counter(); sw.infer(x); big_ms = (time.perf_counter() - t) * 1e3
after = mb() - input_mb
repeat_ms = None
if batch <= 1024:
    runs = []
    for _ in range(max(10, min(200, 6400 // batch))):
        t = time.perf_counter(); sw.infer(x); runs.append((time.perf_counter() - t) * 1e3)
    repeat_ms = statistics.median(runs)
del x  # from here on only what ONNX Runtime keeps is measured
small = []
for _ in range(200):
    t = time.perf_counter(); sw.infer(one); small.append((time.perf_counter() - t) * 1e3)
after_loop = mb()
engine = sw.describe()["engine"]
sw.close()
release_freed_heap()
closed = mb()
print(json.dumps({"before_mb": before, "opened_mb": opened, "after_infer_mb": after, "after_loop_mb": after_loop,
                  "closed_mb": closed, "input_mb": input_mb, "infer_ms": big_ms, "repeat_ms": repeat_ms,
                  "batch1_p50_ms": statistics.median(small), "max_batch": engine["max_batch"],
                  "arena_shrink_above": engine["arena_shrink_above"]}))
"""


PAIRED = r"""
import json, statistics, sys, time
import numpy as np
from adn_edge.runtime import EngineSwitcher

directory, threads, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
old = EngineSwitcher.open(directory, backend="onnxruntime", subnets=["1111"], threads=threads, max_batch=None,
                          arena_shrink_above=None, segmented=False)
new = EngineSwitcher.open(directory, backend="onnxruntime", subnets=["1111"], threads=threads, segmented=False)
out = {}
for batch, n in ((1024, pairs), (64, 6 * pairs)):
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32), dtype=np.float32)
    old.infer(x), new.infer(x)
    ratios, old_ms = [], []
    for i in range(n):
        order = (old, new) if i % 2 == 0 else (new, old)
        t = {}
        for sw in order:
            t0 = time.perf_counter(); sw.infer(x); t[id(sw)] = time.perf_counter() - t0
        ratios.append(t[id(new)] / t[id(old)])
        old_ms.append(t[id(old)] * 1e3)
    q1, med, q3 = statistics.quantiles(ratios, n=4)
    out[batch] = {"median": med, "q1": q1, "q3": q3, "pairs": n, "old_ms": statistics.median(old_ms)}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,64,1024,8192")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--pairs", type=int, default=16, help="interleaved old/new pairs per batch (x6 at 64)")
    args = ap.parse_args()
    directory = ensure_model_dir("resnet_tiny", args.workdir or default_workdir("resnet_tiny"), segments=False)
    batches = [int(b) for b in args.batches.split(",")]
    rows: list[dict[str, Any]] = []
    for setting, options in SETTINGS.items():
        for batch in batches:
            r = run_json_subprocess(SCRIPT, str(directory), str(batch), str(args.threads), json.dumps(options))
            r.update(setting=setting, batch=batch)
            rows.append(r)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    header = (f"{'setting':8} {'batch':>6} {'opened':>8} {'+infer':>8} {'+loop':>8} {'+closed':>8} "
              f"{'infer ms':>9} {'repeat ms':>9} {'b1 p50':>7}")
    print("\nRSS above the process before opening (MB), the input batch itself not counted")
    print(header)
    for r in rows:
        base = r["before_mb"]
        rep = f"{r['repeat_ms']:9.1f}" if r["repeat_ms"] is not None else f"{'-':>9}"
        print(f"{r['setting']:8} {r['batch']:6d} {r['opened_mb'] - base:8.1f} {r['after_infer_mb'] - base:8.1f} "
              f"{r['after_loop_mb'] - base:8.1f} {r['closed_mb'] - base:8.1f} {r['infer_ms']:9.1f} {rep} "
              f"{r['batch1_p50_ms']:7.3f}")
    # What the bounds cost a large batch (chunks, outputs in our buffers): old and new
    # switchers in one process, runs interleaved in pairs, so a shared machine's load
    # hits both alike (separate processes drifted by +-50 % on a busy 2-core host).
    paired = run_json_subprocess(PAIRED, str(directory), str(args.threads), str(args.pairs))
    print("\nlarge-batch latency, new over old, paired in one process")
    for batch, r in paired.items():
        print(f"batch {int(batch):5d}: median {r['median']:.3f}  quartiles {r['q1']:.3f} .. {r['q3']:.3f} "
              f"({r['pairs']} pairs; old median {r['old_ms']:.1f} ms)")
    out = RESULTS / "arena.json"
    write_json(out, {"benchmark": "bench_arena", "command": " ".join(["python", *sys.argv]), "model": "resnet_tiny (super-net 1111, 32x32, random weights)",
                     "environment": environment(args.threads), "settings": SETTINGS, "rows": rows,
                     "paired_new_over_old": paired})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
