"""Monolithic vs segmented on a CPU, in one run: which configuration should be the default?

Every configuration runs in a fresh process (memory is process-wide: arenas, thread
pools, glibc's heap), opens all 2^S sub-networks of ResNet50-ADN through
``EngineSwitcher`` with the ONNX Runtime backend, runs each once, and then times the
super-net and the base-net at batch 1, interleaved (super, base, super, ...), so
that the load of a shared machine hits both alike. Configurations are visited in a
different order in every round and the reported figure is the median over rounds.
PyTorch eager on the same materialised sub-networks (same weights, same threads) is
measured the same way, as the yardstick of the acceptance ratios.

Configurations (``--only`` selects by name):

* ``mono-ext``     monolithic graphs, ``extended`` optimisation, weights shared (the old default)
* ``mono-all``     monolithic, ``all`` (NCHWc), weights not shared, pre-packed
* ``seg-ext``      segment graphs, ``extended``, each session its own spinning pool (the old segmented default)
* ``seg-ext-nospin`` / ``seg-ext-global``  the same with spinning off / one global pool
* ``seg-all``, ``seg-all-nospin``, ``seg-all-global``  segments at ``all`` + unshared + pre-packed,
  a chain of sessions
* ``seg-all-one``, ``seg-int8-one``  the segments as ONE session (``single_session=True``,
  ``backends/onnxruntime/switch_graph.py``)
* ``mono-int8``, ``seg-int8`` (a chain)  the INT8 Q/DQ graphs of ``adn-edge quantize`` (``--segments``), when present
* ``default``      whatever ``EngineSwitcher.open(DIR)`` picks on this CPU
* ``one-mono-ext``, ``one-mono-all``: a single monolithic session of the super-net (the memory yardstick)

    python benchmarks/bench_cpu_modes.py [--threads 1 2] [--rounds 3] [--runs 40]

Prints a table and writes benchmarks/results/cpu_modes_<arch>.json. Weights are
random but well-conditioned (latency and memory do not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, default_workdir, ensure_model_dir, environment, median, run_json_subprocess  # noqa: E402

from adn_edge.fileio import write_json  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "mono-ext": {"segmented": False, "options": {"graph_optimization": "extended"}},
    "mono-all": {"segmented": False, "options": {"graph_optimization": "all", "share_weights": False,
                                                 "prepack": True}},
    "seg-ext": {"segmented": True, "options": {"graph_optimization": "extended", "spinning": True, "single_session": False}},
    "seg-ext-nospin": {"segmented": True, "options": {"graph_optimization": "extended", "spinning": False,
                                                      "single_session": False}},
    "seg-ext-global": {"segmented": True, "options": {"graph_optimization": "extended", "thread_pool": "global",
                                                      "single_session": False}},
    "seg-all": {"segmented": True, "options": {"graph_optimization": "all", "share_weights": False,
                                               "prepack": True, "spinning": True, "single_session": False}},
    "seg-all-nospin": {"segmented": True, "options": {"graph_optimization": "all", "share_weights": False,
                                                      "prepack": True, "spinning": False, "single_session": False}},
    "seg-all-one": {"segmented": True, "options": {"graph_optimization": "all", "share_weights": False,
                                                   "prepack": True, "spinning": False, "single_session": True}},
    "seg-all-global": {"segmented": True, "options": {"graph_optimization": "all", "share_weights": False,
                                                      "prepack": True, "thread_pool": "global",
                                                      "single_session": False}},
    "mono-ext-nospin": {"segmented": False, "options": {"graph_optimization": "extended", "spinning": False}},
    "mono-all-nospin": {"segmented": False, "options": {"graph_optimization": "all", "share_weights": False,
                                                        "prepack": True, "spinning": False}},
    "mono-int8": {"segmented": False, "precision": "int8", "options": {}},
    "mono-int8-nospin": {"segmented": False, "precision": "int8", "options": {"spinning": False}},
    "seg-int8": {"segmented": True, "precision": "int8", "options": {"single_session": False}},
    "seg-int8-one": {"segmented": True, "precision": "int8", "options": {"single_session": True}},
    "seg-int8-global": {"segmented": True, "precision": "int8", "options": {"thread_pool": "global",
                                                                            "single_session": False}},
    "seg-int8-spin": {"segmented": True, "precision": "int8", "options": {"spinning": True, "single_session": False}},
    "default": {"segmented": None, "options": {}},
    "one-mono-ext": {"segmented": False, "subnets": "super", "options": {"graph_optimization": "extended"}},
    "one-mono-all": {"segmented": False, "subnets": "super", "options": {"graph_optimization": "all",
                                                                         "share_weights": False, "prepack": True}},
}

MODE_SCRIPT = r"""
import json, sys, time
import numpy as np
directory, cfg, threads, runs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

import onnxruntime
from adn_edge.modeldir import manifest
from adn_edge.runtime import EngineSwitcher
from adn_edge.runtime.backend import resident_bytes

def rss():
    return resident_bytes() / 2**20
m = manifest.load(directory)
S = m["num_stages"]
sup, base = "1" * S, "0" * S
shape = [1 if d is None else d for d in m["input"]["shape"]]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
kw = dict(cfg["options"], threads=threads)
if cfg.get("precision"):
    kw["precision"] = cfg["precision"]
if cfg["segmented"] is not None:
    kw["segmented"] = cfg["segmented"]
subnets = [sup] if cfg.get("subnets") == "super" else "all"
base_rss = rss()
t0 = time.perf_counter()
sw = EngineSwitcher.open(directory, backend="onnxruntime", subnets=subnets, **kw)
open_s = time.perf_counter() - t0
for code in sw.codes:
    sw.infer(x, code)
rss_mb = rss() - base_rss
timed = [c for c in (sup, base) if c in sw.codes]
for _ in range(5):
    for c in timed:
        sw.infer(x, c)
samples = {c: [] for c in timed}
clock = time.perf_counter
for _ in range(runs):
    for c in timed:
        t = clock()
        sw.infer(x, c)
        samples[c].append((clock() - t) * 1e3)
eng = sw.describe()["engine"]
out = {"rss_mb": rss_mb, "open_s": open_s, "samples": samples,
       "engine": {k: eng.get(k) for k in ("segments", "graph_optimization", "thread_pool", "spinning",
                                          "shared_weights", "prepack", "precision", "threads", "single_session")}}
print(json.dumps(out))
"""

EAGER_SCRIPT = r"""
import json, sys, time
import torch
arch, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
from adn_edge.materialize import materialize
from adn_edge.models import create_model, get_spec
from adn_edge.models.random_weights import randomize
spec = get_spec(arch)
model = randomize(create_model(arch), seed=0, input_size=spec.input_size).eval()
S = model.num_skippable_stages
nets = {c: materialize(model, c).eval() for c in ("1" * S, "0" * S)}
x = torch.randn(1, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
samples = {c: [] for c in nets}
with torch.inference_mode():
    for _ in range(5):
        for net in nets.values():
            net(x)
    for _ in range(runs):
        for c, net in nets.items():
            t = time.perf_counter()
            net(x)
            samples[c].append((time.perf_counter() - t) * 1e3)
print(json.dumps({"samples": samples}))
"""


def available(directory: Path) -> dict[str, bool]:
    """Which precisions the directory has (INT8 configurations need `adn-edge quantize`)."""
    from adn_edge.modeldir import manifest

    m = manifest.load(directory)
    mono_int8 = all("onnx_int8" in rec.get("files", {}) for rec in m["subnets"].values())
    seg = m.get("segments") or {}
    seg_int8 = bool(seg) and all("files_int8" in p for p in seg.get("parts", []))
    return {n: (seg_int8 if n.startswith("seg-int8") else mono_int8) for n in CONFIGS if "int8" in n}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=40, help="timed inferences per sub-network per round")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    directory = ensure_model_dir(args.arch, args.workdir or default_workdir(args.arch))
    have = available(directory)
    names = [n for n in (args.only or CONFIGS) if have.get(n, True)]
    skipped = [n for n in (args.only or CONFIGS) if not have.get(n, True)]
    env = environment(args.threads[0])
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rng = random.Random(0)
    t_start = time.perf_counter()
    for r in range(args.rounds):
        for threads in args.threads:
            order = names + ["eager"]
            rng.shuffle(order)
            for name in order:
                if name == "eager":
                    res = run_json_subprocess(EAGER_SCRIPT, args.arch, str(threads), str(args.runs))
                else:
                    res = run_json_subprocess(MODE_SCRIPT, str(directory), json.dumps(CONFIGS[name]), str(threads),
                                              str(args.runs))
                raw.setdefault(f"{threads}", {}).setdefault(name, []).append(res)
                print(f"[{time.perf_counter() - t_start:5.0f}s] round {r + 1} threads {threads} {name}", flush=True)
    rows = summarise(raw)
    record = {"schema": 1, "benchmark": "cpu_modes", "issue": 14, "arch": args.arch,
              "command": "python benchmarks/bench_cpu_modes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": {**env, "loadavg_end": list(__import__("os").getloadavg())},
              "rounds": args.rounds, "runs": args.runs, "configs": {n: CONFIGS[n] for n in names},
              "skipped": {n: "no INT8 graphs of this kind in the model directory" for n in skipped},
              "rows": rows, "acceptance": acceptance(rows), "seconds": round(time.perf_counter() - t_start, 1)}
    out = args.out or RESULTS / f"cpu_modes_{args.arch}.json"
    write_json(out, record)
    print_table(record)
    print(f"\nwrote {out}")
    return record


def summarise(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per threads and configuration: median over rounds of each round's p50, and of RSS."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for threads, by_name in raw.items():
        for name, results in by_name.items():
            row: dict[str, Any] = {}
            S = len(next(iter(results[0]["samples"])))
            for role, code in (("super", "1" * S), ("base", "0" * S)):
                if code not in results[0]["samples"]:
                    continue
                p50s = [median(r["samples"][code]) for r in results]
                row[f"{role}_p50_ms"] = round(median(p50s), 3)
                row[f"{role}_p50_rounds"] = [round(v, 3) for v in p50s]
            if "rss_mb" in results[0]:
                row["rss_mb"] = round(median([r["rss_mb"] for r in results]), 1)
                row["open_s"] = round(median([r["open_s"] for r in results]), 2)
                row["engine"] = results[0]["engine"]
            rows.setdefault(threads, {})[name] = row
    return rows


def acceptance(rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The issue's floors, computed (not asserted) from this run."""
    out: dict[str, Any] = {}
    for threads, by in rows.items():
        a: dict[str, Any] = {}
        eager = by.get("eager", {}).get("super_p50_ms")
        for seg, mono in (("seg-ext-nospin", "mono-ext"), ("seg-ext-global", "mono-ext"),
                          ("seg-all-nospin", "mono-all"), ("seg-all-global", "mono-all"), ("seg-ext", "mono-ext"),
                          ("seg-all", "mono-all"), ("seg-all-one", "mono-all"), ("default", "mono-all")):
            if seg in by and mono in by:
                a[f"{seg}/{mono}"] = round(by[seg]["super_p50_ms"] / by[mono]["super_p50_ms"], 3)
        d = by.get("default")
        if d and eager:
            a["default_super/eager"] = round(d["super_p50_ms"] / eager, 3)
        for one in ("one-mono-ext", "one-mono-all"):
            if d and one in by:
                a[f"default_rss/{one}"] = round(d["rss_mb"] / by[one]["rss_mb"], 3)
        for int8 in ("seg-int8", "seg-int8-one"):
            if int8 in by and eager:
                a[f"{int8}_super/eager"] = round(by[int8]["super_p50_ms"] / eager, 3)
        out[threads] = a
    return out


def print_table(record: dict[str, Any]) -> None:
    print(f"\n### {record['arch']}-ADN on {record['environment']['cpu']}, batch 1, ONNX Runtime "
          f"{record['environment']['onnxruntime']}: median over {record['rounds']} rounds of the p50 of "
          f"{record['runs']} interleaved runs\n")
    print("| configuration | threads | super-net p50 (ms) | base-net p50 (ms) | RSS, all open (MB) |")
    print("|---|---|---|---|---|")
    for threads, by in record["rows"].items():
        for name, row in by.items():
            rss = f"{row['rss_mb']:.0f}" if "rss_mb" in row else "-"
            base = f"{row['base_p50_ms']:.1f}" if "base_p50_ms" in row else "-"
            label = "PyTorch eager (materialised)" if name == "eager" else name
            print(f"| {label} | {threads} | {row.get('super_p50_ms', float('nan')):.1f} | {base} | {rss} |")
    print("\nratios:", json.dumps(record["acceptance"], indent=1))


if __name__ == "__main__":
    main()
