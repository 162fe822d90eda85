"""Export all sub-networks of ResNet50-ADN with parity; ONNX Runtime vs PyTorch eager on CPU.

Measures (issue 2's benchmark): per sub-network the export+verify seconds, GMACs,
ONNX Runtime CPU latency (batch 1, 224x224, median of >= 30 runs after warm-up,
measured in rounds interleaved over all sub-networks) next
to PyTorch eager latency of the same sub-network (the unfolded ADN model's forward
with the official skip list, i.e. what a user runs without adn-edge), and the ratio
lat(base)/lat(super) next to the GMACs ratio.

Weights are random but well-conditioned (adn_edge.models.random_weights): latency
does not depend on the values. Run:

    python benchmarks/bench_export.py [--arch resnet50] [--runs 30] [--rounds 6] [--threads 2]

Prints a table and writes benchmarks/results/export_<arch>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adn_edge import subnet
from adn_edge.export import Exporter
from adn_edge.fileio import write_json
from adn_edge.models import create_model, get_spec
from adn_edge.models.random_weights import randomize

RESULTS = Path(__file__).resolve().parent / "results"


def timed_ms(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6, help="latency is measured in rounds over all sub-networks")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=None, help="model directory (default: a temporary one)")
    args = ap.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    spec = get_spec(args.arch)
    model = randomize(create_model(args.arch), seed=0, input_size=spec.input_size)
    tmp = tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    exporter = Exporter(model, out, {"path": None, "sha256": "random", "weights": "random"})
    codes = exporter.resolve("all")
    x = np.random.default_rng(0).standard_normal((1, 3, spec.input_size, spec.input_size), dtype=np.float32)
    xt = torch.from_numpy(x)
    t_all = time.perf_counter()
    exported = []
    for code in codes:  # phase 1: export + verify, timed on its own
        r = exporter.export_one(code)
        exported.append(r)
        print(f"{code} {subnet.to_skip_cfg(code)} export+verify {r.seconds:5.2f}s  {r.gmacs:6.3f} GMACs  "
              f"parity {r.parity['onnx'].rel_err:.1e}", flush=True)
    # phase 2: latency, interleaved in rounds over all sub-networks so that a burst of
    # load from elsewhere on the machine spreads over all of them instead of skewing one.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sessions = {r.code: ort.InferenceSession(str(out / r.files["onnx"]), opts, providers=["CPUExecutionProvider"])
                for r in exported}
    ort_ms: dict[str, list[float]] = {c: [] for c in codes}
    eager_ms: dict[str, list[float]] = {c: [] for c in codes}
    per_round = max(1, args.runs // args.rounds)
    with torch.inference_mode():
        for c in codes:  # warm-up
            for _ in range(args.warmup):
                sessions[c].run(None, {"input": x})
                model(xt, skip=subnet.to_skip(c))
        for _ in range(args.rounds):
            for c in codes:
                ort_ms[c] += timed_ms(lambda c=c: sessions[c].run(None, {"input": x}), per_round)
                eager_ms[c] += timed_ms(lambda c=c: model(xt, skip=subnet.to_skip(c)), per_round)
    rows = []
    for r in exported:
        o, e = statistics.median(ort_ms[r.code]), statistics.median(eager_ms[r.code])
        rows.append({"code": r.code, "skip_cfg": subnet.to_skip_cfg(r.code), "export_verify_s": round(r.seconds, 3),
                     "gmacs": round(r.gmacs, 4), "params": r.params, "parity_rel_err": r.parity["onnx"].rel_err,
                     "onnxruntime_ms": round(o, 3), "eager_ms": round(e, 3), "ort_over_eager": round(o / e, 3),
                     "samples": len(ort_ms[r.code])})
        print(f"{r.code} {subnet.to_skip_cfg(r.code)} {r.gmacs:6.3f} GMACs  ORT {o:7.2f} ms  eager {e:7.2f} ms  "
              f"ratio {o / e:.2f}", flush=True)
    # total export+verify time excludes the latency measurements interleaved above
    export_total = sum(r["export_verify_s"] for r in rows)
    by = {r["code"]: r for r in rows}
    sup, base = by[subnet.super_code(spec.num_stages)], by[subnet.base_code(spec.num_stages)]
    summary = {
        "export_verify_total_s": round(export_total, 2),
        "wall_s_with_latency": round(time.perf_counter() - t_all, 1),
        "max_parity_rel_err": max(r["parity_rel_err"] for r in rows),
        "median_ort_over_eager": round(statistics.median(r["ort_over_eager"] for r in rows), 3),
        "max_ort_over_eager": max(r["ort_over_eager"] for r in rows),
        "latency_ratio_base_super_ort": round(base["onnxruntime_ms"] / sup["onnxruntime_ms"], 3),
        "gmacs_ratio_base_super": round(base["gmacs"] / sup["gmacs"], 3),
    }
    summary["latency_vs_gmacs_ratio_deviation"] = round(
        summary["latency_ratio_base_super_ort"] / summary["gmacs_ratio_base_super"] - 1, 3)
    env = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
           "onnxruntime": ort.__version__, "python": platform.python_version(), "os_cpu_count": os.cpu_count()}
    result = {"benchmark": "export", "arch": args.arch, "batch": 1, "input_size": spec.input_size,
              "runs": args.runs, "rounds": args.rounds, "warmup": args.warmup, "env": env, "summary": summary, "subnets": rows,
              "command": f"python benchmarks/bench_export.py --arch {args.arch} --runs {args.runs} "
                         f"--rounds {args.rounds} --threads {args.threads}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"export_{args.arch}.json"
    write_json(path, result)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
