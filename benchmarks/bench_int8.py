"""INT8 Q/DQ graphs (``adn-edge quantize``) against FP32: issue 6's benchmark.

1. Latency, ONNX Runtime on this machine's CPU, batch 1: ResNet50-ADN, all 16
   sub-networks, random but well-conditioned weights (latency does not depend on the
   values). Floor: INT8 >= 2x faster than FP32 for every sub-network.
   Each precision is timed at both of ONNX Runtime's relevant optimisation levels
   (``extended``, the runtime backend's default, and ``all``, which adds the NCHWc
   layout: the fastest FP32 on x86), sessions created the plain way (weights
   pre-packed, ONNX Runtime's default); the speed-up is FP32's best level against
   INT8's best level, so FP32 is not handicapped. FP32 and INT8 runs of a
   sub-network are interleaved in rounds so the load of a shared machine hits both
   alike. The ResNet-50 graphs are calibrated with min/max on 64 built-in images
   (scales do not change latency; accuracy on random weights means nothing).
   The same two precisions through ``EngineSwitcher`` (the onnxruntime backend's
   defaults, and with ``prepack=True``) for the super- and base-net, since the
   backend disables weight pre-packing by default.
2. Accuracy, the embedded resnet_tiny (trained on Fashion-MNIST) on its own built-in
   data, ``builtin:fashion`` (export with the recommended per-sub-network BatchNorm
   recalibration on 512 of its training images, as ``adn-edge demo`` does), every
   sub-network: top-1 FP32 vs INT8 on its 2,000 test images, calibrated on 512 of its
   training images. Floor: INT8 <= 1 point below FP32. The default method (percentile)
   is the floor's subject; min/max and entropy are listed beside it.

3. Segments (``--segments``, ``adn-edge quantize --segments``): the embedded model exported
   with ``--segments`` (no BatchNorm recalibration: segments cannot have it), its 8 segment
   graphs quantised with the default method on 512 training images of ``builtin:fashion``,
   each part calibrated on the activations of all 2^k prefixes; top-1 of all 16 sub-networks
   chained from the INT8 segments vs the float32 segments on its 2,000 test images, beside the
   monolithic INT8 graphs of the same (un-recalibrated) export. Floor: INT8 segments <= 1
   point below FP32 for every sub-network. With latency on: ResNet50-ADN's segments
   (random weights, min/max on 64 images) through ``EngineSwitcher(segmented=True)``,
   FP32 vs INT8, batch 1.

    python benchmarks/bench_int8.py [--threads 1] [--rounds 4] [--iters 6] [--workdir DIR] [--segments]
    python benchmarks/bench_int8.py --segments --skip-latency --skip-monolithic   # segments accuracy only

Prints the tables and writes benchmarks/results/int8.json (int8_partial.json when a part
was skipped).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, default_workdir, ensure_model_dir, environment, median  # noqa: E402

from adn_edge.data import EMBEDDED_DATASET, EMBEDDED_NAME, embedded_path  # noqa: E402
from adn_edge.modeldir import manifest  # noqa: E402
from adn_edge.fileio import sha256_file, write_json  # noqa: E402

EMBEDDED_DATA = f"builtin:{EMBEDDED_DATASET}"
"""The embedded model's own data: recalibration, calibration and evaluation of parts 2 and 3.
(The ResNet50-ADN latency parts have random weights: there the built-in digits are only
calibration inputs.)"""
LEVELS = ("extended", "all")
SPEEDUP_FLOOR = 2.0
DROP_FLOOR = 1.0


def _session(path: Path, threads: int, level: str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _fused(path: Path) -> dict[str, int]:
    """Operators ONNX Runtime actually runs for the INT8 graph (after Q/DQ fusion)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        counts: dict[str, int] = {}
        for n in onnx.load(so.optimized_model_filepath).graph.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def quantize_resnet(directory: Path) -> dict[str, Any]:
    from adn_edge.quantize import QuantizeOptions, quantize_directory

    t0 = time.perf_counter()
    report = quantize_directory(directory, "builtin", "all",
                                QuantizeOptions(method="minmax", samples=64, eval_data=None),
                                log=lambda m: print("  " + m[:160], flush=True))
    new = sum(s.status == "quantized" for s in report.subnets)
    print(f"quantised {new} of {len(report.subnets)} sub-networks in {time.perf_counter() - t0:.0f} s "
          f"({len(report.subnets) - new} up to date)", flush=True)
    return {"seconds": round(time.perf_counter() - t0, 1), "quantized_now": new,
            "per_subnet_seconds": {s.code: round(s.seconds, 1) for s in report.subnets if s.status == "quantized"},
            "logit_rel_err_calibration_images": {s.code: s.rel_err for s in report.subnets}}


def measure_latency(directory: Path, threads: int, rounds: int, iters: int) -> dict[str, Any]:
    m = manifest.load(directory)
    shape = [1 if d is None else d for d in m["input"]["shape"]]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    rows: dict[str, Any] = {}
    for code in m["subnets"]:
        files = m["subnets"][code]["files"]
        paths = {"fp32": directory / files["onnx"]["path"], "int8": directory / files["onnx_int8"]["path"]}
        sessions = {(p, lv): _session(paths[p], threads, lv) for p in paths for lv in LEVELS}
        times: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
        for s in sessions.values():
            for _ in range(2):
                s.run(None, {"input": x})
        for _ in range(rounds):
            for k, s in sessions.items():
                for _ in range(iters):
                    t = time.perf_counter()
                    s.run(None, {"input": x})
                    times[k].append((time.perf_counter() - t) * 1e3)
        del sessions
        p50 = {f"{p}_{lv}_ms": round(median(times[(p, lv)]), 3) for p, lv in times}
        fp32 = min(p50["fp32_extended_ms"], p50["fp32_all_ms"])
        int8 = min(p50["int8_extended_ms"], p50["int8_all_ms"])
        rows[code] = {**p50, "fp32_ms": fp32, "int8_ms": int8, "speedup": round(fp32 / int8, 3),
                      "speedup_extended": round(p50["fp32_extended_ms"] / p50["int8_extended_ms"], 3),
                      "gmacs": m["subnets"][code].get("gmacs"), "samples": rounds * iters}
        print(f"  {code}  fp32 {fp32:7.2f} ms  int8 {int8:7.2f} ms  x{fp32 / int8:4.2f}  "
              f"(extended: {p50['fp32_extended_ms']:.2f} / {p50['int8_extended_ms']:.2f})  "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    speedups = [r["speedup"] for r in rows.values()]
    return {"threads": threads, "rounds": rounds, "iterations_per_round": iters, "per_subnet": rows,
            "speedup_min": min(speedups), "speedup_median": round(median(speedups), 3), "speedup_max": max(speedups),
            "speedup_extended_min": min(r["speedup_extended"] for r in rows.values()),
            "int8_ops_after_fusion_1111": _fused(directory / m["subnets"]["1111"]["files"]["onnx_int8"]["path"])}


def _interleaved_ms(directory: Path, codes: list[str], configs: dict[str, dict[str, Any]], threads: int,
                    rounds: int, iters: int, segmented: bool) -> dict[str, dict[str, float]]:
    """Median ms per (code, configuration): one switcher per configuration, all open at
    once and timed in turn, round after round, so the load of a shared machine hits
    every configuration alike. ``{code: {"<config>_ms": ...}}``."""
    from adn_edge.runtime import EngineSwitcher

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    switchers = {k: EngineSwitcher.open(directory, backend="onnxruntime", segmented=segmented, subnets=codes,
                                        threads=threads, **o) for k, o in configs.items()}
    try:
        times: dict[tuple[str, str], list[float]] = {(k, c): [] for k in switchers for c in codes}
        for sw in switchers.values():
            for c in codes:
                sw.infer(x, c)
        for _ in range(rounds):
            for k, sw in switchers.items():
                for c in codes:
                    for _ in range(iters):
                        t = time.perf_counter()
                        sw.infer(x, c)
                        times[(k, c)].append((time.perf_counter() - t) * 1e3)
    finally:
        for sw in switchers.values():
            sw.close()
    return {c: {f"{k}_ms": round(median(times[(k, c)]), 3) for k in configs} for c in codes}


def measure_switcher(directory: Path, threads: int, rounds: int, iters: int) -> dict[str, Any]:
    codes = ["1111", "0000"]
    configs = {"fp32": {}, "int8": {"precision": "int8"}, "int8_prepack": {"precision": "int8", "prepack": True},
               "fp32_prepack": {"prepack": True}}
    out = _interleaved_ms(directory, codes, configs, threads, rounds, iters, segmented=False)
    for c, r in out.items():
        r["speedup_defaults"] = round(r["fp32_ms"] / r["int8_ms"], 3)
        r["speedup_prepack"] = round(r["fp32_prepack_ms"] / r["int8_prepack_ms"], 3)
        print(f"  EngineSwitcher {c}: " + ", ".join(f"{k} {v}" for k, v in r.items()), flush=True)
    return {"codes": codes, "per_subnet": out, "configs": {k: dict(v) for k, v in configs.items()}}


def _of_embedded_model(m: dict[str, Any], recalibrated: bool) -> bool:
    """Whether an earlier export in the workdir is of today's embedded checkpoint (and
    recalibrated on its data when ``recalibrated``): otherwise export again."""
    if (m.get("source") or {}).get("sha256") != sha256_file(embedded_path()):
        return False
    recal = m.get("recalibration") or {}
    if recalibrated:
        return recal.get("data") == EMBEDDED_DATA and recal.get("samples") == 512
    return not recal


def measure_accuracy(workdir: Path, methods: list[str]) -> dict[str, Any]:
    import shutil

    import torch

    from adn_edge.data import load_embedded
    from adn_edge.export import Exporter, ExportOptions
    from adn_edge.quantize import DEFAULT_METHOD, QuantizeOptions, quantize_directory
    from adn_edge.train.recalibrate import batches_from_data

    torch.set_num_threads(1)
    directory = workdir / "resnet_tiny"
    try:
        m = manifest.load(directory)
        complete = len(m["subnets"]) == 16 and _of_embedded_model(m, recalibrated=True)
    except Exception:  # noqa: BLE001 - anything wrong: export again
        complete = False
    if not complete:
        shutil.rmtree(directory, ignore_errors=True)
        model, ckpt = load_embedded()
        batches = batches_from_data(EMBEDDED_DATA, model.arch, 512)
        Exporter(model, directory, ckpt.source_record(),
                 ExportOptions(recalibration=batches, recalibration_source=EMBEDDED_DATA)).export("all")
    out: dict[str, Any] = {"model": f"embedded {EMBEDDED_NAME} (resnet_tiny, Fashion-MNIST), BN recalibrated per "
                                    f"sub-network on 512 images of {EMBEDDED_DATA} (demo recipe)",
                           "calibration": f"{EMBEDDED_DATA} train split, 512 images",
                           "evaluation": f"{EMBEDDED_DATA} test split", "methods": {}}
    # the default method last, so the directory ends up holding its graphs
    for method in [m for m in methods if m != DEFAULT_METHOD] + [DEFAULT_METHOD]:
        t0 = time.perf_counter()
        report = quantize_directory(directory, EMBEDDED_DATA, "all",
                                    QuantizeOptions(method=method, samples=512, eval_data=EMBEDDED_DATA))
        rows = {s.code: s.accuracy.record() for s in report.subnets if s.accuracy is not None}
        drops = [r["drop"] for r in rows.values()]
        out["methods"][method] = {"seconds": round(time.perf_counter() - t0, 1), "per_subnet": rows,
                                  "max_drop": max(drops), "mean_drop": round(float(np.mean(drops)), 4),
                                  "min_agreement": min(r["agreement"] for r in rows.values())}
        print(f"  {method:10s} max drop {max(drops):+.2f} points, min agreement "
              f"{out['methods'][method]['min_agreement']:.2f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
    out["default_method"] = DEFAULT_METHOD
    return out


def measure_segments_accuracy(workdir: Path, compare_monolithic: bool = True) -> dict[str, Any]:
    """INT8 segments vs FP32 segments on the embedded model, every sub-network (and the
    monolithic INT8 graphs of the same export beside them), on its own data."""
    import shutil

    import torch

    from adn_edge.data import load_embedded
    from adn_edge.export import Exporter, ExportOptions
    from adn_edge.export.segments import SegmentExporter
    from adn_edge.quantize import DEFAULT_METHOD, QuantizeOptions, quantize_directory, quantize_segments

    torch.set_num_threads(1)
    directory = workdir / "resnet_tiny_segments"
    try:
        m = manifest.load(directory)
        complete = ("segments" in m and (not compare_monolithic or len(m["subnets"]) == 16)
                    and _of_embedded_model(m, recalibrated=False))
    except Exception:  # noqa: BLE001 - anything wrong: export again
        complete = False
    if not complete:
        shutil.rmtree(directory, ignore_errors=True)
        model, ckpt = load_embedded()
        exporter = Exporter(model, directory, ckpt.source_record(), ExportOptions())
        if compare_monolithic:
            exporter.export("all")
        SegmentExporter(exporter).export()
    t0 = time.perf_counter()
    report = quantize_segments(directory, EMBEDDED_DATA, QuantizeOptions(samples=512, eval_data=EMBEDDED_DATA),
                               log=lambda msg: print("  " + msg[:160], flush=True))
    seconds = round(time.perf_counter() - t0, 1)
    rows = {s.code: {**s.accuracy.record(), "logit_rel_err": round(s.rel_err, 6)}
            for s in report.subnets if s.accuracy is not None}
    drops = [r["drop"] for r in rows.values()]
    out: dict[str, Any] = {
        "model": f"embedded {EMBEDDED_NAME} (resnet_tiny, Fashion-MNIST), exported with --segments, no BatchNorm "
                 "recalibration",
        "calibration": f"{EMBEDDED_DATA} train split, 512 images, every part over all 2^k prefixes",
        "evaluation": f"{EMBEDDED_DATA} test split",
        "method": DEFAULT_METHOD, "seconds": seconds, "per_subnet": rows, "max_drop": max(drops),
        "mean_drop": round(float(np.mean(drops)), 4), "min_agreement": min(r["agreement"] for r in rows.values()),
        "max_logit_rel_err": max(r["logit_rel_err"] for r in rows.values()),
        "parts": [f.record() for f in report.forms],
        "command": f"adn-edge export adn_edge/data/{EMBEDDED_NAME}.safetensors --segments --out DIR && "
                   f"adn-edge quantize DIR --segments --calib {EMBEDDED_DATA}"}
    print(f"  INT8 segments: max drop {max(drops):+.2f} points, min agreement {out['min_agreement']:.2f} % "
          f"({seconds:.0f} s)", flush=True)
    if compare_monolithic:
        mono = quantize_directory(directory, EMBEDDED_DATA, "all",
                                  QuantizeOptions(samples=512, eval_data=EMBEDDED_DATA))
        out["monolithic_same_export"] = {s.code: s.accuracy.record() for s in mono.subnets if s.accuracy is not None}
    return out


def _segments_dir(directory: Path) -> Path:
    """ResNet50-ADN's 8 segment graphs only (random weights: latency does not depend on them)."""
    from _common import SOURCE

    try:
        m = manifest.load(directory)
        complete = m["source"].get("sha256") == SOURCE["sha256"] and "segments" in m
    except Exception:  # noqa: BLE001 - anything wrong: export again
        complete = False
    if complete:
        return directory
    import torch

    from adn_edge.export.segments import export_segments
    from adn_edge.models import create_model, get_spec
    from adn_edge.models.random_weights import randomize

    torch.set_num_threads(1)
    model = randomize(create_model("resnet50"), seed=0, input_size=get_spec("resnet50").input_size)
    t0 = time.perf_counter()
    export_segments(model, directory, source=SOURCE)
    print(f"exported ResNet50-ADN segments in {time.perf_counter() - t0:.0f} s", flush=True)
    return directory


def measure_segments_latency(workdir: Path, threads: int, rounds: int, iters: int) -> dict[str, Any]:
    """FP32 vs INT8 segments of ResNet50-ADN through EngineSwitcher(segmented=True), batch 1."""
    from adn_edge.quantize import QuantizeOptions, quantize_segments

    directory = _segments_dir(workdir / "resnet50_segments")
    t0 = time.perf_counter()
    quantize_segments(directory, "builtin", QuantizeOptions(method="minmax", samples=64, eval_data=None),
                      log=lambda msg: print("  " + msg[:160], flush=True))
    quantize_s = round(time.perf_counter() - t0, 1)
    codes = ["1111", "1010", "0000"]
    configs = {"fp32": {}, "int8": {"precision": "int8"}}
    rows = _interleaved_ms(directory, codes, configs, threads, rounds, iters, segmented=True)
    for c, r in rows.items():
        r["speedup"] = round(r["fp32_ms"] / r["int8_ms"], 3)
        print(f"  segmented {c}: fp32 {r['fp32_ms']:.2f} ms, int8 {r['int8_ms']:.2f} ms, x{r['speedup']:.2f} "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
    return {"threads": threads, "rounds": rounds, "iterations_per_round": iters, "quantize_seconds": quantize_s,
            "per_subnet": rows, "note": "p50 of interleaved runs; segmented backend defaults (int8: prepack on)"}


def print_tables(result: dict[str, Any]) -> None:
    lat = result.get("latency")
    if lat:
        print(f"\nResNet50-ADN, ONNX Runtime {result['env']['onnxruntime']} CPU, batch 1, {lat['threads']} thread(s), "
              "p50 of interleaved runs")
        print(f"{'code':6s} {'GMACs':>6s} {'FP32 ms':>8s} {'INT8 ms':>8s} {'speed-up':>8s} {'(extended)':>10s}")
        for code, r in lat["per_subnet"].items():
            print(f"{code:6s} {r['gmacs']:6.2f} {r['fp32_ms']:8.2f} {r['int8_ms']:8.2f} {r['speedup']:7.2f}x "
                  f"{r['speedup_extended']:9.2f}x")
        print(f"speed-up min {lat['speedup_min']:.2f}x, median {lat['speedup_median']:.2f}x "
              f"(floor {SPEEDUP_FLOOR}x)")
    acc = result.get("accuracy")
    if acc:
        methods = [m for m in acc["methods"] if m != acc["default_method"]]
        default = acc["methods"][acc["default_method"]]["per_subnet"]
        n = next(iter(default.values()))["samples"]
        print(f"\nEmbedded {EMBEDDED_NAME}, {EMBEDDED_DATA} test split ({n} images), top-1 %; INT8 = "
              f"{acc['default_method']}")
        head = f"{'code':6s} {'FP32':>6s} {'INT8':>6s} {'drop':>6s} {'agree':>6s}"
        print(head + "".join(f" {m + ' drop':>13s}" for m in methods))
        for code, r in default.items():
            extra = "".join(f" {acc['methods'][m]['per_subnet'][code]['drop']:13.2f}" for m in methods)
            print(f"{code:6s} {r['top1_fp32']:6.2f} {r['top1_int8']:6.2f} {r['drop']:6.2f} {r['agreement']:6.1f}"
                  + extra)
        d = acc["methods"][acc["default_method"]]
        print(f"max drop {d['max_drop']:.2f} points (floor {DROP_FLOOR})")
    seg = (result.get("segments") or {}).get("accuracy")
    if seg:
        mono = seg.get("monolithic_same_export") or {}
        n = next(iter(seg["per_subnet"].values()))["samples"]
        print(f"\nEmbedded {EMBEDDED_NAME} through its segments (no recalibration), {EMBEDDED_DATA} test split "
              f"({n} images), top-1 %; INT8 = {seg['method']}, every part calibrated over all prefixes")
        print(f"{'code':6s} {'FP32':>6s} {'INT8seg':>7s} {'drop':>6s} {'agree':>6s} {'logit err':>9s}"
              + (f" {'INT8mono drop':>13s}" if mono else ""))
        for code, r in seg["per_subnet"].items():
            extra = f" {mono[code]['drop']:13.2f}" if code in mono else ""
            print(f"{code:6s} {r['top1_fp32']:6.2f} {r['top1_int8']:7.2f} {r['drop']:6.2f} {r['agreement']:6.1f} "
                  f"{r['logit_rel_err']:9.4f}" + extra)
        print(f"max drop {seg['max_drop']:.2f} points (floor {DROP_FLOOR})")
    seglat = (result.get("segments") or {}).get("latency")
    if seglat:
        print(f"\nResNet50-ADN segments, EngineSwitcher(segmented=True), batch 1, {seglat['threads']} thread(s)")
        for code, r in seglat["per_subnet"].items():
            print(f"{code:6s} fp32 {r['fp32_ms']:8.2f} ms  int8 {r['int8_ms']:8.2f} ms  x{r['speedup']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=6, help="runs per session per round")
    ap.add_argument("--workdir", type=Path, default=None, help="default: <tmp>/adn-edge-bench/int8")
    ap.add_argument("--methods", default="minmax,entropy,percentile", help="accuracy: methods to compare")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--segments", action="store_true", help="also INT8 segments (quantize --segments)")
    ap.add_argument("--skip-monolithic", action="store_true", help="with --segments: only the segment sections")
    args = ap.parse_args()

    workdir = args.workdir or default_workdir("int8")
    env = environment(args.threads)
    print(f"workdir {workdir}; {env['cpu']}, {env['os_cpu_count']} CPUs, load {env['loadavg_start']}", flush=True)
    t_start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "int8", "backend": "onnxruntime", "device": "cpu", "batch": 1,
                              "env": env}
    if not args.skip_latency and not args.skip_monolithic:
        directory = ensure_model_dir("resnet50", workdir / "resnet50", segments=False, threads=args.threads)
        print("quantising ResNet50-ADN (min/max, 64 images) ...", flush=True)
        result["resnet50_quantize"] = quantize_resnet(directory)
        print("latency, every sub-network ...", flush=True)
        result["latency"] = measure_latency(directory, args.threads, args.rounds, args.iters)
        print("latency through EngineSwitcher ...", flush=True)
        result["switcher"] = measure_switcher(directory, args.threads, args.rounds, args.iters)
    if not args.skip_accuracy and not args.skip_monolithic:
        print("accuracy, embedded model ...", flush=True)
        result["accuracy"] = measure_accuracy(workdir, [m for m in args.methods.split(",") if m])
    if args.segments:
        result["segments"] = {}
        if not args.skip_accuracy:
            print("INT8 segments, accuracy, embedded model ...", flush=True)
            result["segments"]["accuracy"] = measure_segments_accuracy(workdir)
        if not args.skip_latency:
            print("INT8 segments, latency, ResNet50-ADN ...", flush=True)
            result["segments"]["latency"] = measure_segments_latency(workdir, args.threads, args.rounds, args.iters)
    floors: dict[str, Any] = {}
    if "latency" in result:
        floors["int8_speedup_min"] = {"value": result["latency"]["speedup_min"], "floor": SPEEDUP_FLOOR,
                                      "ok": result["latency"]["speedup_min"] >= SPEEDUP_FLOOR}
    if "accuracy" in result:
        d = result["accuracy"]["methods"][result["accuracy"]["default_method"]]
        floors["int8_top1_drop_max"] = {"value": d["max_drop"], "floor": DROP_FLOOR, "ok": d["max_drop"] <= DROP_FLOOR}
    seg_acc = (result.get("segments") or {}).get("accuracy")
    if seg_acc:
        floors["int8_segments_top1_drop_max"] = {"value": seg_acc["max_drop"], "floor": DROP_FLOOR,
                                                 "ok": seg_acc["max_drop"] <= DROP_FLOOR}
    result["floors"] = floors
    result["env"]["loadavg_end"] = list(os.getloadavg())
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["command"] = ("python benchmarks/bench_int8.py " + " ".join(sys.argv[1:])).strip()
    print_tables(result)
    path = RESULTS / "int8.json"
    if args.skip_latency or args.skip_accuracy or args.skip_monolithic:
        path = RESULTS / ("int8_segments.json" if args.skip_monolithic and args.segments else "int8_partial.json")
    write_json(path, result)
    print(f"\nfloors: {floors}\nwrote {path}")


if __name__ == "__main__":
    main()
