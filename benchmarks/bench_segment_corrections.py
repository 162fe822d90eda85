"""Corrected segments (``export --segments --recalibrate``): accuracy, latency and memory.

Issue 14, item 2, option (i): segment graphs fold reference BatchNorm statistics and
take each sub-network's recalibrated statistics as per-channel correction inputs
(adn_edge/export/corrections.py). Measured here:

1. top-1 of all 16 sub-networks on each model's own built-in test split, through the
   corrected segment graphs (exact, a few ``--correction-threshold`` values and the
   ``joint`` reference), the recalibrated monolithic graphs and the plain
   (un-recalibrated) segments; on the embedded model (Fashion-MNIST, input 32, data
   ``builtin:fashion``: 2,000 test images) and on the training study's checkpoints
   (``/tmp/study/work/{adn,sandwich}_f{1.0,0.3}_s{seed}``, digits, input 16, data
   ``builtin``: 360 test images). Recalibration: ``--samples`` images of the same
   dataset's training split (seed 0).
2. ResNet50-ADN with random weights at 224 (recalibration data: built-in digits
   resized): latency p50 at batch 1, 1 ONNX Runtime thread (EngineSwitcher), and the
   resident memory of a fresh process that opened the directory and ran every code once,
   for corrected segments (several thresholds), plain segments and the recalibrated
   monolithic graphs; segments as one session (the CPU default) and, for exact
   corrections, also as a chain of sessions. Each configuration runs in its own process
   (rough: +-10 % between runs; ``bench_segment_sessions.py --dir WORK/r50_recal`` pairs
   them in one process).

    python benchmarks/bench_segment_corrections.py [--seeds 0 1] [--skip-latency] [--skip-accuracy]

A part that is skipped keeps its previous record in the JSON (``kept_from_previous_run``
names the run that measured it).

The machine is shared (2 cores): timings are rough; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "segment_corrections.json"
STUDY = Path("/tmp/study/work")


def _memo_recalibration() -> dict[Any, Any]:
    """Recalibrate each (model, code) once for every export of this run (the exporters
    import ``recalibrated`` at call time): the monolithic and every segment export then
    use the very same statistics, as one ``--recalibrate`` export would."""
    from adn_edge.train import recalibrate as rc

    cache: dict[Any, Any] = {}
    original = rc.recalibrated

    def memo(model: Any, code: str, batches: Any, max_samples: int | None = None) -> Any:
        k = (id(model), code, id(batches) if isinstance(batches, list) else None, max_samples)
        if k[2] is None:
            return original(model, code, batches, max_samples)
        if k not in cache:
            cache[k] = original(model, code, batches, max_samples)
        return cache[k]

    rc.recalibrated = memo  # type: ignore[assignment]
    return cache


def _top1(directory: Path, segmented: bool, x: Any, y: Any, codes: list[str]) -> dict[str, float]:
    import numpy as np

    from adn_edge.runtime import EngineSwitcher

    out = {}
    with EngineSwitcher.open(directory, segmented=segmented, threads=1) as sw:
        for code in codes:
            logits = np.concatenate([sw.infer(x[i:i + 128], code) for i in range(0, len(x), 128)])
            out[code] = round(float((logits.argmax(1) == y).mean() * 100), 2)
    return out


def accuracy_of(name: str, model: Any, source: dict[str, Any], input_size: int, samples: int,
                thresholds: list[float], work: Path, dataset: str = "digits") -> dict[str, Any]:
    """``dataset``: the built-in dataset the model was trained on (its test split is
    evaluated, its training split recalibrates)."""
    import numpy as np
    import torch

    from adn_edge import subnet
    from adn_edge.export import ExportOptions, Exporter
    from adn_edge.export.segments import SegmentExporter, export_segments
    from adn_edge.train.data import load_builtin, preprocess_for_arch
    from adn_edge.train.recalibrate import batches_from_data

    cache = _memo_recalibration()
    torch.set_num_threads(1)
    arch = model.arch
    codes = subnet.all_codes(model.num_skippable_stages)
    data = f"builtin:{dataset}"
    test = load_builtin(dataset, "test", preprocess_for_arch(arch, input_size))
    x, y = test.images.numpy().astype(np.float32), test.labels.numpy()
    batches = batches_from_data(data, arch, samples, input_size)
    t0 = time.perf_counter()
    base = work / name
    opts = ExportOptions(input_size=input_size, recalibration=batches, recalibration_source=data)
    exporter = Exporter(model, base / "recal", source, opts)
    seg = SegmentExporter(exporter)
    exporter.export("all")
    exact = seg.export()  # corrected segments beside the recalibrated monolithic graphs
    export_segments(model, base / "plain", source, ExportOptions(input_size=input_size))
    variants: dict[str, dict[str, Any]] = {
        "monolithic_recalibrated": {"dir": base / "recal", "segmented": False},
        "segments_corrected": {"dir": base / "recal", "segmented": True, "record": exact["corrections"]},
        "segments_plain": {"dir": base / "plain", "segmented": True},
    }
    for t in thresholds:
        rec = export_segments(model, base / f"t{t:g}", source, opts, correction_threshold=t)
        variants[f"segments_corrected_t{t:g}"] = {"dir": base / f"t{t:g}", "segmented": True,
                                                 "record": rec["corrections"]}
    rec = export_segments(model, base / "joint", source, opts, correction_reference="joint")
    variants["segments_corrected_joint"] = {"dir": base / "joint", "segmented": True, "record": rec["corrections"]}
    export_s = time.perf_counter() - t0
    cache.clear()
    out: dict[str, Any] = {"model": name, "data": data, "input_size": input_size,
                           "recal_samples": int(sum(len(b) for b in batches)),
                           "test_images": int(len(y)), "export_seconds": round(export_s, 1), "variants": {}}
    sup = codes[0]
    for v, spec in variants.items():
        acc = _top1(spec["dir"], spec["segmented"], x, y, codes)
        mixed = [acc[c] for c in codes if c not in (sup, codes[-1])]
        entry = {"top1": acc, "super": acc[sup], "base": acc[codes[-1]], "mixed_min": min(mixed),
                 "mixed_mean": round(sum(mixed) / len(mixed), 2)}
        if "record" in spec:
            entry["corrections"] = {k: spec["record"][k] for k in ("reference", "threshold", "convs", "inputs",
                                                                   "deviation")}
        out["variants"][v] = entry
    # corrected vs monolithic recalibrated: the same model, so the same predictions up to float error
    mono, corr = out["variants"]["monolithic_recalibrated"]["top1"], out["variants"]["segments_corrected"]["top1"]
    out["max_abs_diff_corrected_vs_monolithic"] = round(max(abs(mono[c] - corr[c]) for c in codes), 2)
    return out


def accuracy(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from adn_edge import checkpoint as ckpt_mod
    from adn_edge.data import EMBEDDED_DATASET, load_embedded

    rows = []
    model, ckpt = load_embedded()
    print(f"accuracy: embedded model (builtin:{EMBEDDED_DATASET})", flush=True)
    rows.append(accuracy_of("embedded", model, ckpt.source_record(), 32, args.samples, args.thresholds, work,
                            EMBEDDED_DATASET))
    for run in args.runs:
        for fraction in args.fractions:
            for seed in args.seeds:
                name = f"{run}_f{fraction}_s{seed}"
                path = STUDY / name / "model.safetensors"
                if not path.exists():
                    print(f"  {name}: no checkpoint at {path}, skipped", flush=True)
                    continue
                print(f"accuracy: {name}", flush=True)
                model, ckpt = ckpt_mod.load(path, arch="resnet_tiny")
                rows.append(accuracy_of(name, model, ckpt.source_record(), 16, args.samples, args.thresholds,
                                        work, "digits"))
    return rows


# -- latency and memory (ResNet50-ADN, random weights) -----------------------------------

def export_resnet50(work: Path, samples: int, thresholds: list[float]) -> dict[str, Any]:
    import torch

    from adn_edge.export import ExportOptions, Exporter
    from adn_edge.export.segments import SegmentExporter, export_segments
    from adn_edge.models import create_model
    from adn_edge.models.random_weights import randomize
    from adn_edge.train.recalibrate import batches_from_data

    _memo_recalibration()
    torch.set_num_threads(2)
    model = randomize(create_model("resnet50"), input_size=224).eval()
    source = {"path": None, "sha256": "random-seed-0", "weights": "random"}
    batches = batches_from_data("builtin", "resnet50", samples, 224, batch_size=16)
    opts = ExportOptions(recalibration=batches, recalibration_source="builtin")
    t0 = time.perf_counter()
    exporter = Exporter(model, work / "r50_recal", source, opts)
    seg = SegmentExporter(exporter)
    exporter.export("all")
    records = {"exact": seg.export()["corrections"]}
    for t in thresholds:
        records[f"t{t:g}"] = export_segments(model, work / f"r50_t{t:g}", source, opts,
                                             correction_threshold=t)["corrections"]
    export_segments(model, work / "r50_plain", source)
    return {"samples": int(sum(len(b) for b in batches)), "export_seconds": round(time.perf_counter() - t0, 1),
            "corrections": {k: {f: v[f] for f in ("threshold", "convs", "inputs", "deviation")}
                            for k, v in records.items()}}


def measure(directory: str, segmented: bool, codes: list[str], iterations: int,
            single_session: bool | None = None) -> dict[str, Any]:
    """In a fresh process: open, run every code once, then p50 of ``iterations`` runs per code.
    ``single_session``: segments as one ONNX Runtime session (None: the runtime's default,
    one session on the CPU) or as a chain of sessions (False)."""
    import numpy as np

    from adn_edge import subnet
    from adn_edge.runtime import EngineSwitcher
    from benchmarks._common import percentile, rss_mb

    rss0 = rss_mb()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    extra = {"single_session": single_session} if segmented and single_session is not None else {}
    with EngineSwitcher.open(directory, segmented=segmented, threads=1, **extra) as sw:
        mode = sw.describe().get("engine", {}).get("single_session")
        rss_open = rss_mb()
        for code in subnet.all_codes(4):
            sw.infer(x, code)
        rss_ran = rss_mb()
        times: dict[str, list[float]] = {c: [] for c in codes}
        for _ in range(iterations):
            for c in codes:
                t = time.perf_counter()
                sw.infer(x, c)
                times[c].append((time.perf_counter() - t) * 1000)
    return {"p50_ms": {c: round(percentile(v, 50), 2) for c, v in times.items()}, "single_session": mode,
            "rss_mb_open": round(rss_open - rss0, 1), "rss_mb_after_all_codes": round(rss_ran, 1)}


def latency(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print("latency: exporting ResNet50-ADN (random weights)", flush=True)
    info = export_resnet50(work, args.r50_samples, args.thresholds)
    configs: dict[str, tuple[Path, bool, bool | None]] = {
        "monolithic_recalibrated": (work / "r50_recal", False, None),
        "segments_plain": (work / "r50_plain", True, None),
        "segments_corrected": (work / "r50_recal", True, None),
        "segments_corrected_chain": (work / "r50_recal", True, False),
        **{f"segments_corrected_t{t:g}": (work / f"r50_t{t:g}", True, None) for t in args.thresholds}}
    codes = ["1111", "1010", "0101", "0000"]
    out: dict[str, Any] = {"arch": "resnet50", "input": [1, 3, 224, 224], "threads": 1, "codes": codes,
                           "iterations": args.iterations, **info, "configs": {}}
    for name, (d, segmented, single) in configs.items():
        load = os.getloadavg()
        cmd = [sys.executable, __file__, "--measure", str(d), "--segmented", str(int(segmented)),
               "--iterations", str(args.iterations)]
        cmd += [] if single is None else ["--single-session", str(int(single))]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r["loadavg_before"] = [round(v, 2) for v in load]
        out["configs"][name] = r
        print(f"  {name}: {r['p50_ms']}  rss {r['rss_mb_after_all_codes']} MB", flush=True)
    return out


def print_tables(record: dict[str, Any]) -> None:
    for row in record.get("accuracy", []):
        print(f"\n{row['model']} ({row.get('data', 'builtin:digits')}, input {row['input_size']}, "
              f"{row['recal_samples']} recalibration images, {row['test_images']} test images): top-1 %")
        print(f"  {'variant':34s} {'super':>6s} {'base':>6s} {'mixed min':>9s} {'mixed mean':>10s}  corrected convs")
        for v, e in row["variants"].items():
            c = e.get("corrections")
            convs = f"{c['convs']} ({c['inputs']} vectors)" if c else "-"
            print(f"  {v:34s} {e['super']:6.2f} {e['base']:6.2f} {e['mixed_min']:9.2f} {e['mixed_mean']:10.2f}  "
                  f"{convs}")
        print(f"  max |corrected segments - monolithic recalibrated| over 16 codes: "
              f"{row['max_abs_diff_corrected_vs_monolithic']} pt")
    lat = record.get("latency")
    if lat:
        print("\nResNet50-ADN 224, batch 1, 1 thread: p50 ms per code, RSS after running every code")
        codes = lat["codes"]
        print(f"  {'config':34s} " + " ".join(f"{c:>8s}" for c in codes) + f" {'RSS MB':>8s}")
        for name, r in lat["configs"].items():
            print(f"  {name:34s} " + " ".join(f"{r['p50_ms'][c]:8.1f}" for c in codes)
                  + f" {r['rss_mb_after_all_codes']:8.0f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--runs", nargs="*", default=["adn", "sandwich"])
    p.add_argument("--fractions", type=float, nargs="*", default=[1.0, 0.3])
    p.add_argument("--samples", type=int, default=512, help="recalibration images (accuracy part)")
    p.add_argument("--r50-samples", type=int, default=32, help="recalibration images (ResNet50 part)")
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.05, 0.2, 0.5])
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    p.add_argument("--segmented", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--single-session", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        r = measure(args.measure, bool(args.segmented), ["1111", "1010", "0101", "0000"], args.iterations,
                    None if args.single_session is None else bool(args.single_session))
        print(json.dumps(r))
        return r
    work = args.work or Path(tempfile.mkdtemp(prefix="adn_segcorr_"))
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "benchmark": "segment_corrections", "issue": "14 item 2 (i)",
        "command": "python benchmarks/bench_segment_corrections.py " + " ".join(argv if argv is not None
                                                                                else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": [round(v, 2) for v in os.getloadavg()]},
        "notes": "top-1 on each model's own built-in test split (embedded model: builtin:fashion, 2,000 images; "
                 "study checkpoints: builtin digits, 360 images); recalibration on that dataset's training split "
                 "(seed 0, not the study's own training fraction). Latency: ResNet50-ADN with random weights, "
                 "recalibrated on built-in digits; EngineSwitcher, ONNX Runtime CPU, 1 thread, shared 2-core "
                 "machine (rough).",
    }
    if not args.skip_accuracy:
        record["accuracy"] = accuracy(args, work)
    if not args.skip_latency:
        record["latency"] = latency(args, work)
    record["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out.exists() and (args.skip_accuracy or args.skip_latency):
        old = json.loads(args.out.read_text())  # keep the part not re-measured
        for part in ("accuracy", "latency"):
            if part not in record and part in old:
                record[part] = old[part]
                record.setdefault("kept_from_previous_run", {})[part] = {
                    "command": old.get("command"), "machine": old.get("machine")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print_tables(record)
    return record


if __name__ == "__main__":
    main()
