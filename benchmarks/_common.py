"""Shared by the benchmark scripts: a model directory to measure, process memory, timing.

The model directory is exported once (monolithic graphs + segments) from random but
well-conditioned weights (:mod:`adn_edge.models.random_weights`: latency and memory
do not depend on the values, parity checks still mean something) and reused while
its manifest says it is complete, because exporting ResNet-50's 16 graphs takes
minutes on a small CPU.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SOURCE = {"path": None, "sha256": "random-seed-0", "weights": "random"}


def default_workdir(arch: str) -> Path:
    return Path(tempfile.gettempdir()) / "adn-edge-bench" / arch


def ensure_model_dir(arch: str, directory: Path, segments: bool = True, threads: int = 1) -> Path:
    """Export ``arch`` (all sub-networks, and the segments) into ``directory`` unless done."""
    from adn_edge.modeldir import manifest

    try:
        m = manifest.load(directory)
        monolithic = (m["arch"] == arch and m["source"].get("sha256") == SOURCE["sha256"]
                      and len(m["subnets"]) == 2 ** m["num_stages"])
        have_segments = "segments" in m
    except Exception:  # noqa: BLE001 - anything wrong means: export again
        monolithic = have_segments = False
    if monolithic and (have_segments or not segments):
        return directory
    import torch

    from adn_edge.export import export
    from adn_edge.export.segments import export_segments
    from adn_edge.models import create_model, get_spec
    from adn_edge.models.random_weights import randomize

    torch.set_num_threads(threads)  # more threads are slower on small shared CPUs (OpenMP barriers)
    spec = get_spec(arch)
    model = randomize(create_model(arch), seed=0, input_size=spec.input_size)
    if not monolithic:  # (only the segments missing: keep the graphs, and what quantize added to them)
        t0 = time.perf_counter()
        export(model, directory, "all", source=SOURCE)
        print(f"exported every sub-network in {time.perf_counter() - t0:.0f} s", flush=True)
    if segments:
        t0 = time.perf_counter()
        export_segments(model, directory, source=SOURCE)
        print(f"exported segments in {time.perf_counter() - t0:.0f} s", flush=True)
    return directory


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def timed_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_json_subprocess(code: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (clean memory) and parse its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def environment(threads: int) -> dict[str, Any]:
    import numpy
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "os_cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
