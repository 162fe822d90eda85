"""How fast can a CPU run ResNet50-ADN at all? The ceiling the segmented default is held to.

Issue 14 asks the default CPU configuration for <= 0.6x PyTorch eager (FP32) and INT8
segments for <= 0.25x, and segments within 10 % of monolithic graphs at 2 threads.
``bench_cpu_modes.py`` measures our configurations; this script measures what bounds
them, in one run, each configuration in a fresh process, super- and base-net
interleaved, configurations shuffled per round, median over rounds of each round's p50:

* ``eager``          PyTorch eager, the materialised sub-network (the yardstick)
* ``ort-mono``       one plain ONNX Runtime session per monolithic graph, ``all``,
                     idle threads sleeping: the fastest ONNX Runtime gets on this graph
* ``ort-mono-int8``  the same on the INT8 Q/DQ graphs of ``adn-edge quantize``
* ``openvino``       OpenVINO's CPU plugin on the same monolithic graph (LATENCY hint;
                     skipped when ``openvino`` is not importable): a second runtime's ceiling
* ``default``        ``EngineSwitcher.open(DIR)``'s pick (segments at ``all``)
* ``switch-graph``   the naive form of the default's one-session graph: every segment
                     form in ONE graph, an ``If`` per stage, but the weights left inside
                     the branches and optimised by ONNX Runtime there (what
                     ``backends/onnxruntime/switch_graph.py`` explains it does not do)

    python benchmarks/bench_cpu_ceiling.py [--threads 1 2] [--rounds 3] [--runs 30]

Prints a table and writes ``benchmarks/results/cpu_ceiling_<arch>.json``. The model
directory is the one ``bench_cpu_modes.py`` uses (exported and quantised on first use).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, default_workdir, ensure_model_dir, environment, median, run_json_subprocess  # noqa: E402

from adn_edge.fileio import write_json  # noqa: E402

CONFIGS = ("eager", "ort-mono", "ort-mono-int8", "openvino", "default", "switch-graph")

# Times run(code) for the super- and base-net, interleaved; every script defines
# `prepare()` -> (run, rss_mb) and leaves the rest to this tail.
TIMING_TAIL = r"""
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
r0 = rss()
run, codes = prepare()
for c in codes:
    run(c)
rss_mb = rss() - r0
for _ in range(5):
    for c in codes:
        run(c)
samples = {c: [] for c in codes}
for _ in range(runs):
    for c in codes:
        t = time.perf_counter()
        run(c)
        samples[c].append((time.perf_counter() - t) * 1e3)
print(json.dumps({"samples": samples, "rss_mb": rss_mb}))
"""

HEAD = r"""
import json, os, sys, time
import numpy as np
directory, config, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = json.load(open(os.path.join(directory, "manifest.json")))
S = m["num_stages"]
SUP, BASE = "1" * S, "0" * S
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
"""

SCRIPTS = {
    "eager": r"""
def prepare():
    import torch
    torch.set_num_threads(threads)
    from adn_edge.materialize import materialize
    from adn_edge.models import create_model
    from adn_edge.models.random_weights import randomize
    model = randomize(create_model(m["arch"]), seed=0, input_size=224).eval()
    nets = {c: materialize(model, c).eval() for c in (SUP, BASE)}
    t = torch.from_numpy(x)
    torch.set_grad_enabled(False)
    return (lambda c: nets[c](t)), [SUP, BASE]
""",
    "ort-mono": r"""
def prepare(suffix=""):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = {c: ort.InferenceSession(os.path.join(directory, m["subnets"][c]["files"]["onnx" + suffix]["path"]), so,
                                 providers=["CPUExecutionProvider"]) for c in (SUP, BASE)}
    name = m["input"]["name"]
    return (lambda c: s[c].run(None, {name: x})), [SUP, BASE]
""",
    "openvino": r"""
def prepare():
    import openvino as ov
    core = ov.Core()
    req = {}
    for c in (SUP, BASE):
        model = core.read_model(os.path.join(directory, m["subnets"][c]["files"]["onnx"]["path"]))
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        req[c] = compiled.create_infer_request()
    return (lambda c: req[c].infer({0: x})), [SUP, BASE]
""",
    "default": r"""
def prepare():
    from adn_edge.runtime import EngineSwitcher
    sw = EngineSwitcher.open(directory, backend="onnxruntime", threads=threads)
    return (lambda c: sw.infer(x, c)), [SUP, BASE]
""",
    "switch-graph": r"""
def prepare():
    import onnx
    import onnxruntime as ort
    from adn_edge.backends.onnxruntime.switch_graph import SwitchGraphBuilder, flag_feeds
    builder = SwitchGraphBuilder()
    for p in m["segments"]["parts"]:
        for kind in ("full", "skip"):
            builder.add_model(p["index"], kind, p["input"], p["output"],
                              onnx.load(os.path.join(directory, p["files"][kind]["path"])))
    data = builder.compose(hoist=False)  # the naive form: weights inside the branches, optimised by ORT
    builder.close()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    del data
    sess._model_bytes = None
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    name = m["input"]["name"]
    flags = flag_feeds((SUP, BASE))
    return (lambda c: sess.run(None, {name: x, **flags[c]})), [SUP, BASE]
""",
}
SCRIPTS["ort-mono-int8"] = SCRIPTS["ort-mono"].replace('def prepare(suffix=""):', 'def prepare(suffix="_int8"):')


def runnable(name: str, directory: Path) -> str | None:
    """Why ``name`` cannot run here (None when it can)."""
    import importlib.util

    from adn_edge.modeldir import manifest

    m = manifest.load(directory)
    if name == "openvino" and importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install openvino)"
    if name == "ort-mono-int8" and not all("onnx_int8" in r.get("files", {}) for r in m["subnets"].values()):
        return "no INT8 graphs (adn-edge quantize)"
    if name == "switch-graph" and not m.get("segments"):
        return "no segments (adn-edge export --segments)"
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", nargs="+", choices=CONFIGS, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    directory = ensure_model_dir(args.arch, args.workdir or default_workdir(args.arch))
    wanted = list(args.only or CONFIGS)
    skipped = {n: why for n in wanted if (why := runnable(n, directory))}
    names = [n for n in wanted if n not in skipped]
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rng = random.Random(0)
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for threads in args.threads:
            order = list(names)
            rng.shuffle(order)
            for name in order:
                res = run_json_subprocess(HEAD + SCRIPTS[name] + TIMING_TAIL, str(directory), name, str(threads),
                                          str(args.runs))
                raw.setdefault(str(threads), {}).setdefault(name, []).append(res)
                print(f"[{time.perf_counter() - t0:5.0f}s] round {r + 1} threads {threads} {name}", flush=True)
    rows = {t: {n: summarise(results) for n, results in by.items()} for t, by in raw.items()}
    record = {"schema": 1, "benchmark": "cpu_ceiling", "issue": 14, "arch": args.arch,
              "command": "python benchmarks/bench_cpu_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": {**environment(args.threads[0]), "loadavg_end": list(os.getloadavg())},
              "rounds": args.rounds, "runs": args.runs, "skipped": skipped, "rows": rows,
              "ratios": ratios(rows), "seconds": round(time.perf_counter() - t0, 1)}
    write_json(args.out or RESULTS / f"cpu_ceiling_{args.arch}.json", record)
    print_table(record)
    return record


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"rss_mb": round(median([r["rss_mb"] for r in results]), 1)}
    for role, code in zip(("super", "base"), results[0]["samples"]):
        p50s = [median(r["samples"][code]) for r in results]
        row[f"{role}_p50_ms"] = round(median(p50s), 3)
        row[f"{role}_p50_rounds"] = [round(v, 3) for v in p50s]
    return row


def ratios(rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Super-net p50 of every configuration over eager's, and the chain's over one graph's."""
    out: dict[str, dict[str, float]] = {}
    for threads, by in rows.items():
        eager = by.get("eager", {}).get("super_p50_ms")
        r = {f"{n}/eager": round(row["super_p50_ms"] / eager, 3) for n, row in by.items() if eager and n != "eager"}
        for a, b in (("default", "ort-mono"), ("switch-graph", "ort-mono")):
            if a in by and b in by:
                r[f"{a}/{b}"] = round(by[a]["super_p50_ms"] / by[b]["super_p50_ms"], 3)
        out[threads] = r
    return out


def print_table(record: dict[str, Any]) -> None:
    print(f"\n### {record['arch']}-ADN, batch 1, on {record['environment']['cpu']}: median over "
          f"{record['rounds']} rounds of the p50 of {record['runs']} interleaved runs\n")
    print("| configuration | threads | super-net p50 (ms) | base-net p50 (ms) | x eager (super) | RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for threads, by in record["rows"].items():
        for name, row in by.items():
            ratio = record["ratios"][threads].get(f"{name}/eager")
            print(f"| {name} | {threads} | {row['super_p50_ms']:.1f} | {row['base_p50_ms']:.1f} | "
                  f"{'-' if ratio is None else f'{ratio:.2f}'} | {row['rss_mb']:.0f} |")
    for name, why in record["skipped"].items():
        print(f"(skipped {name}: {why})")


if __name__ == "__main__":
    main()
