"""Segmented vs monolithic TensorRT engines: issue 3's "segmented mode" measurement on a GPU.

ResNet50-ADN (random but well-conditioned weights: latency and memory do not depend
on the values), all 16 sub-networks, batch 1, one precision (fp16 by default):

* engines: files and bytes, 16 monolithic engines against the 8 segment engines
  (TensorRT embeds weights, so this is the memory the segments save);
* GPU memory actually taken by a switcher holding all 16 sub-networks resident, per
  mode (NVML's device-wide used memory before and after open, on an otherwise idle
  GPU; ``null`` without nvidia-ml-py);
* latency per sub-network, host wall-clock around ``EngineSwitcher.infer`` and the
  device time between CUDA events, both modes, with and without CUDA graphs (which
  fold a segment chain's S launches into one). The modes are interleaved per
  sub-network in rounds, so drifting clocks hit both alike.

Needs TensorRT, a CUDA binding and a GPU; without them it says why and exits 2
(it never reports numbers it did not measure). Builds take minutes the first time
(a shared timing cache makes the second mode's builds quick).

    python benchmarks/bench_tensorrt_segments.py [--arch resnet50] [--precision fp16]
        [--iterations 200] [--rounds 3] [--workdir DIR]

Prints a table and writes benchmarks/results/tensorrt_segments_<arch>_<gpu>.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, default_workdir, ensure_model_dir, median, percentile  # noqa: E402

from adn_edge import subnet  # noqa: E402
from adn_edge.modeldir import manifest  # noqa: E402
from adn_edge.fileio import write_json  # noqa: E402

MODES = (("monolithic", False), ("segmented", True))


def gpu_used_mb() -> float | None:
    """Device-wide used memory from NVML; None without nvidia-ml-py or where NVML has no
    memory figure (Jetsons share memory with the CPU: read tegrastats there)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - ImportError, or NVMLError without a driver
        return None
    try:
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
        return float(info.used) / 2**20
    except Exception:  # noqa: BLE001 - e.g. NVML_ERROR_NOT_SUPPORTED on integrated GPUs
        return None
    finally:
        pynvml.nvmlShutdown()


def engine_bytes(m: dict[str, Any], precision: str) -> dict[str, int]:
    mono = [e["engines"][precision]["bytes"] for e in m["subnets"].values()]
    seg = [part["engines"][kind][precision]["bytes"] for part in m["segments"]["parts"]
           for kind in ("full", "skip")]
    return {"monolithic_files": len(mono), "monolithic_bytes": sum(mono),
            "segmented_files": len(seg), "segmented_bytes": sum(seg)}


def time_code(sw: Any, code: str, x: np.ndarray, iterations: int) -> tuple[list[float], list[float]]:
    sw.switch(code)
    for _ in range(10):
        sw.infer(x)
    host, device = [], []
    backend = sw.engine
    for _ in range(iterations):
        t0 = time.perf_counter()
        sw.infer(x)
        host.append((time.perf_counter() - t0) * 1e3)
        if backend.last_device_ms is not None:
            device.append(backend.last_device_ms)
    return host, device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--precision", default="fp16", choices=["fp32", "fp16"])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = ap.parse_args(argv)

    from adn_edge.backends.tensorrt.env import unavailable_reason

    why = unavailable_reason()
    if why is not None:
        print(f"bench_tensorrt_segments: cannot run here: {why}", file=sys.stderr)
        return 2
    from adn_edge.backends.tensorrt.build import build_directory
    from adn_edge.runtime import EngineSwitcher

    d = ensure_model_dir(args.arch, args.workdir or default_workdir(args.arch), segments=True, threads=4)
    builds = {}
    for name, segmented in MODES:
        t0 = time.perf_counter()
        results = build_directory(d, precision=args.precision, max_batch=1, segments=segmented)
        builds[name] = {"seconds": round(time.perf_counter() - t0, 1),
                        "built": sum(r["status"] == "built" for r in results)}
    m = manifest.load(d)
    codes = subnet.all_codes(int(m["num_stages"]))
    x = np.random.default_rng(0).standard_normal((1, 3, *m["input"]["shape"][2:])).astype(np.float32)

    memory: dict[str, Any] = {}
    latency: dict[str, dict[str, dict[str, list[float]]]] = {}
    for graphs in (False, True):
        switchers = {}
        for name, segmented in MODES:
            before = gpu_used_mb()
            switchers[name] = EngineSwitcher.open(d, backend="tensorrt", segmented=segmented,
                                                  precision=args.precision, cuda_graphs=graphs, graph_batch=1)
            after = gpu_used_mb()
            if not graphs:
                desc = switchers[name].describe()["engine"]
                memory[name] = {"gpu_used_mb": None if before is None or after is None else round(after - before, 1),
                                "activation_bytes": desc["activation_bytes"],
                                "engine_bytes": desc["engine_bytes_total"]}
        key = "cuda_graphs" if graphs else "plain"
        latency[key] = {name: {c: {"host": [], "device": []} for c in codes} for name, _ in MODES}
        try:
            for _ in range(args.rounds):
                for code in codes:
                    for name, _seg in MODES:
                        host, device = time_code(switchers[name], code, x, args.iterations // args.rounds)
                        latency[key][name][code]["host"] += host
                        latency[key][name][code]["device"] += device
        finally:
            for sw in switchers.values():
                sw.close()

    rows: dict[str, Any] = {}
    print(f"{args.arch} {args.precision}, batch 1: p50 host ms (device ms), monolithic vs segmented")
    for key, by_mode in latency.items():
        print(f"  {key}:")
        for code in codes:
            entry = {}
            for name, _ in MODES:
                t = by_mode[name][code]
                entry[name] = {"host_p50": round(median(t["host"]), 4), "host_p99": round(percentile(t["host"], 99), 4),
                               "device_p50": round(median(t["device"]), 4) if t["device"] else None}
            entry["overhead"] = round(entry["segmented"]["host_p50"] / entry["monolithic"]["host_p50"] - 1, 4)
            rows.setdefault(key, {})[code] = entry
            mo, se = entry["monolithic"], entry["segmented"]
            print(f"    {code}: {mo['host_p50']:.3f} ({mo['device_p50']}) vs {se['host_p50']:.3f} ({se['device_p50']})"
                  f"  {entry['overhead']:+.1%}")
        print(f"    median overhead: {median([e['overhead'] for e in rows[key].values()]):+.1%}")
    files = engine_bytes(m, args.precision)
    print(f"engines: {files['monolithic_files']} monolithic {files['monolithic_bytes'] / 2**20:.1f} MB, "
          f"{files['segmented_files']} segments {files['segmented_bytes'] / 2**20:.1f} MB")
    print(f"GPU memory of a switcher holding all {len(codes)}: " + ", ".join(
        f"{name} {v['gpu_used_mb']} MB" for name, v in memory.items()))

    from adn_edge.backends.tensorrt import env as trt_env

    gpu = trt_env.environment()
    out = {"arch": args.arch, "precision": args.precision, "batch": 1, "iterations": args.iterations,
           "rounds": args.rounds, "gpu": gpu.gpu, "compute_capability": gpu.compute_capability,
           "tensorrt": gpu.tensorrt_version, "builds": builds, "engines": files, "memory": memory,
           "latency": rows,
           "median_overhead": {k: median([e["overhead"] for e in v.values()]) for k, v in rows.items()},
           "command": "python benchmarks/bench_tensorrt_segments.py " + " ".join(sys.argv[1:] if argv is None
                                                                                  else argv)}
    slug = re.sub(r"[^a-z0-9]+", "_", gpu.gpu.lower()).strip("_")
    path = args.out or RESULTS / f"tensorrt_segments_{args.arch}_{slug}.json"
    write_json(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
