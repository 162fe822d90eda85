"""Reading ONNX initializers: the former hand-written protobuf reader against the onnx package.

The ONNX Runtime backends read every graph's initializers before creating its
session, to share one buffer per distinct weight (adn_edge/backends/onnxruntime/
sessions.py). Until the split of runner.py they did it with a hand-written
wire-format reader (zero-copy views into the graph bytes, no ``onnx`` needed); now
:func:`adn_edge.backends.onnxruntime.initializers.onnx_initializers` parses with
``onnx.ModelProto.FromString`` and converts like ``onnx.numpy_helper.to_array``.
The former reader is embedded below, unchanged, so that this comparison can be
run again.

Measures on ResNet50-ADN (random weights; the model directory from
``_common.ensure_model_dir``), the super-net graph (code 1111) and all 16
sub-network graphs:

1. reader time per graph: the median of ``--runs`` runs per reader, on the same
   bytes, the two readers interleaved (alternating which goes first), every array
   touched; both results checked identical (names, dtypes, shapes, values);
2. peak resident memory above the process before reading (``VmHWM``), each reader
   in a fresh process: reading the 16 graphs one after the other, and the whole
   directory open (``EngineSwitcher.open``, 16 sessions sharing weights), the
   latter also timed (wall and process CPU time); ``--procs`` processes per reader,
   interleaved.

    python benchmarks/bench_initializer_reader.py [--runs 7] [--procs 3] [--workdir DIR]

Prints a table and writes benchmarks/results/initializer_reader.json. The decision
it informed (the onnx-package reader replaced the former one) and its figures are in
the docstring of adn_edge/backends/onnxruntime/initializers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, default_workdir, ensure_model_dir, environment, median, run_json_subprocess  # noqa: E402

# ---------------------------------------------------------------------------
# FORMER IMPLEMENTATION, kept only for this comparison: the hand-written protobuf
# wire-format reader of adn_edge/backends/onnxruntime/runner.py up to commit c3e7f40
# (`_varint`, `_fields`, `_packed_varints`, `Initializer`, `_tensor`,
# `onnx_initializers`), unchanged but for the names. Not used by adn_edge.

_DTYPES: dict[int, Any] = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
                           7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_varints(value: Any, wire: int) -> list[int]:
    if wire == 0:
        return [value]
    out, j = [], 0
    while j < len(value):
        x, j = _varint(value, j)
        out.append(x - (1 << 64) if x >= 1 << 63 else x)
    return out


@dataclass
class FormerInitializer:
    name: str
    array: np.ndarray
    """A view into the graph's bytes (not a copy): copy it before keeping it."""


def _tensor(buf: memoryview) -> FormerInitializer | None:
    """One TensorProto, or None for a form not worth sharing (external data, strings)."""
    dims: list[int] = []
    dtype = name = None
    raw = None
    typed: dict[int, list[Any]] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _packed_varints(value, wire)
        elif number == 2:
            dtype = value
        elif number == 8:
            name = bytes(value).decode("utf-8")
        elif number == 9:
            raw = value
        elif number in (4, 5, 7, 10):
            typed.setdefault(number, []).append((wire, value))
        elif number == 14 and value == 1:  # data_location = EXTERNAL
            return None
    np_type = _DTYPES.get(dtype) if dtype is not None else None
    if name is None or np_type is None:
        return None
    count = int(np.prod(dims)) if dims else 1
    if raw is not None:
        arr = np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<"))
    elif dtype == 1 and 4 in typed:
        arr = np.concatenate([np.frombuffer(v, "<f4") for _, v in typed[4]])
    elif dtype == 11 and 10 in typed:
        arr = np.concatenate([np.frombuffer(v, "<f8") for _, v in typed[10]])
    elif dtype in (6, 7) and (5 in typed or 7 in typed):
        vals = [x for w, v in typed.get(5 if dtype == 6 else 7, []) for x in _packed_varints(v, w)]
        arr = np.asarray(vals, dtype=np_type)
    elif count == 0:
        arr = np.zeros(0, dtype=np_type)
    else:
        return None
    if arr.size != count:
        return None
    return FormerInitializer(name, arr.reshape(dims))


def former_onnx_initializers(data: bytes) -> list[FormerInitializer]:
    """The graph-level initializers of a serialized ModelProto (ModelProto.graph = 7,
    GraphProto.initializer = 5), as zero-copy views into ``data``."""
    out = []
    for number, _, graph in _fields(memoryview(data)):
        if number == 7:
            for gnum, _, tensor in _fields(graph):
                if gnum == 5:
                    init = _tensor(tensor)
                    if init is not None:
                        out.append(init)
    return out


# END OF THE FORMER IMPLEMENTATION
# ---------------------------------------------------------------------------


def readers() -> dict[str, Callable[[bytes], Iterable[Any]]]:
    from adn_edge.backends.onnxruntime.initializers import onnx_initializers

    return {"former": former_onnx_initializers, "onnx": onnx_initializers}


def consume(inits: Iterable[Any]) -> int:
    """Touch every array (first and last byte) the way the backend's byte comparison would start."""
    total = 0
    for init in inits:
        flat = init.array.reshape(-1).view(np.uint8)
        total += flat.size + (int(flat[0]) + int(flat[-1]) if flat.size else 0)
    return total


def same_result(a: Iterable[Any], b: Iterable[Any]) -> str | None:
    """None if both readers returned the same initializers, else what differs."""
    da = {i.name: i.array for i in a}
    db = {i.name: i.array for i in b}
    if list(da) != list(db):
        return f"names differ: {sorted(set(da) ^ set(db))[:5]}"
    for name, x in da.items():
        y = db[name]
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            return f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
    return None


def time_readers(paths: list[Path], runs: int) -> dict[str, Any]:
    fns = readers()
    rows = {}
    for path in paths:
        data = path.read_bytes()
        diff = same_result(fns["former"](data), fns["onnx"](data))
        if diff is not None:
            raise SystemExit(f"{path.name}: the readers disagree: {diff}")
        times: dict[str, list[float]] = {name: [] for name in fns}
        for run in range(runs):
            for name in (("former", "onnx") if run % 2 == 0 else ("onnx", "former")):
                t0 = time.perf_counter()
                consume(fns[name](data))
                times[name].append((time.perf_counter() - t0) * 1e3)
        ms = {name: round(median(v), 2) for name, v in times.items()}
        rows[path.name] = {"mb": round(len(data) / 1e6, 1), "tensors": len(list(fns["former"](data))),
                           "former_ms": ms["former"], "onnx_ms": ms["onnx"],
                           "onnx_over_former": round(ms["onnx"] / ms["former"], 2), "identical": True,
                           "runs_ms": {name: [round(t, 2) for t in v] for name, v in times.items()}}
        print(f"  {path.name}: former {ms['former']:.1f} ms, onnx {ms['onnx']:.1f} ms", flush=True)
    return rows


MEMORY_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
from bench_initializer_reader import readers, consume
from _common import rss_mb
import onnx  # imported in both processes: its own cost is reported apart
import adn_edge.backends.onnxruntime.sessions as sessions
from adn_edge.runtime import EngineSwitcher

def peak_mb():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))

reader, scenario, directory, paths = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
fn = readers()[reader]
base = rss_mb()
t0, c0 = time.perf_counter(), time.process_time()
out = {}
if scenario == "read":
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        consume(fn(data))
        del data
else:
    sessions.onnx_initializers = fn  # what SharedInitializers.attach calls
    with EngineSwitcher.open(directory, backend="onnxruntime", subnets="all", threads=1, segmented=False) as sw:
        d = sw.describe()["engine"]
        out["rss_open_mb"] = round(d["rss_open_bytes"] / 2**20, 1)
        out["bytes_unique_mb"] = round(d["sharing"]["bytes_unique"] / 2**20, 1)
        out["tensors_referenced"] = d["sharing"]["tensors_referenced"]
        out["rss_after_open_mb"] = round(rss_mb() - base, 1)
out["s"] = round(time.perf_counter() - t0, 2)
out["cpu_s"] = round(time.process_time() - c0, 2)  # all threads; steadier than wall time on a shared host
out["peak_delta_mb"] = round(peak_mb() - base, 1)
print(json.dumps(out))
"""


def measure_memory(directory: Path, paths: list[Path], procs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in ("read", "open"):
        runs: dict[str, list[dict[str, Any]]] = {"former": [], "onnx": []}
        for k in range(procs):
            for reader in (("former", "onnx") if k % 2 == 0 else ("onnx", "former")):
                runs[reader].append(run_json_subprocess(MEMORY_SCRIPT, reader, scenario, str(directory),
                                                        json.dumps([str(p) for p in paths])))
        summary: dict[str, Any] = {}
        for reader, rs in runs.items():
            summary[reader] = {key: median([r[key] for r in rs]) for key in rs[0]}
            summary[reader]["runs"] = rs
        out[scenario] = summary
        f, o = summary["former"], summary["onnx"]
        print(f"  {scenario}: peak +{f['peak_delta_mb']:.0f} MB former, +{o['peak_delta_mb']:.0f} MB onnx; "
              f"{f['s']:.2f} s former, {o['s']:.2f} s onnx", flush=True)
    return out


def onnx_import_cost() -> dict[str, Any]:
    code = ("import json, sys, time; sys.path.insert(0, 'benchmarks'); from _common import rss_mb; "
            "import numpy; r0 = rss_mb(); t0 = time.perf_counter(); import onnx; "
            "print(json.dumps({'s': round(time.perf_counter() - t0, 3), 'rss_mb': round(rss_mb() - r0, 1)}))")
    return run_json_subprocess(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per reader and graph (median)")
    ap.add_argument("--procs", type=int, default=3, help="fresh processes per reader and memory scenario")
    args = ap.parse_args()

    from adn_edge.fileio import write_json
    from adn_edge.modeldir import manifest

    directory = ensure_model_dir(args.arch, args.workdir or default_workdir(args.arch), segments=False)
    m = manifest.load(directory)
    codes = list(m["subnets"])  # super-net first
    paths = [directory / m["subnets"][c]["files"]["onnx"]["path"] for c in codes]
    env = environment(threads=1)
    import onnx
    env["onnx"] = onnx.__version__
    print(f"model directory {directory}; {env['cpu']}, {env['os_cpu_count']} CPUs, load {env['loadavg_start']}")
    t_start = time.perf_counter()

    print("reader time per graph ...", flush=True)
    per_graph = time_readers(paths, args.runs)
    total = {r: round(sum(row[f"{r}_ms"] for row in per_graph.values()), 1) for r in ("former", "onnx")}
    print("peak memory and whole-directory open (fresh process each) ...", flush=True)
    memory = measure_memory(directory, paths, args.procs)
    result: dict[str, Any] = {
        "benchmark": "initializer_reader", "arch": args.arch, "graphs": len(paths), "env": env,
        "supernet": {"graph": paths[0].name, **{k: v for k, v in per_graph[paths[0].name].items() if k != "runs_ms"}},
        "all_graphs_ms": {**total, "onnx_over_former": round(total["onnx"] / total["former"], 2)},
        "per_graph": per_graph, "memory": memory, "onnx_import": onnx_import_cost(),
    }
    o, r = memory["open"], memory["read"]
    result["summary"] = {
        "reader_time_onnx_over_former": result["all_graphs_ms"]["onnx_over_former"],
        "read_peak_mb": {"former": r["former"]["peak_delta_mb"], "onnx": r["onnx"]["peak_delta_mb"]},
        "open_cpu_s": {"former": o["former"]["cpu_s"], "onnx": o["onnx"]["cpu_s"],
                       "onnx_over_former": round(o["onnx"]["cpu_s"] / o["former"]["cpu_s"], 3)},
        "open_wall_s": {"former": o["former"]["s"], "onnx": o["onnx"]["s"]},
        "open_peak_mb": {"former": o["former"]["peak_delta_mb"], "onnx": o["onnx"]["peak_delta_mb"]},
        "open_rss_after_trim_mb": {"former": o["former"]["rss_open_mb"], "onnx": o["onnx"]["rss_open_mb"]},
    }
    result["note"] = ("former = the hand-written wire-format reader (embedded in this script, no longer in "
                      "adn_edge); onnx = adn_edge.backends.onnxruntime.initializers.onnx_initializers. Open figures "
                      "exclude `import onnx` (onnx_import).")
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["env"]["loadavg_end"] = list(os.getloadavg())
    result["command"] = (f"python benchmarks/bench_initializer_reader.py --arch {args.arch} --runs {args.runs} "
                         f"--procs {args.procs}")

    print(f"\n{'graph':<22}{'MB':>7}{'tensors':>9}{'former ms':>11}{'onnx ms':>9}{'ratio':>7}")
    for name, row in per_graph.items():
        print(f"{name:<22}{row['mb']:>7.1f}{row['tensors']:>9}{row['former_ms']:>11.1f}{row['onnx_ms']:>9.1f}"
              f"{row['onnx_over_former']:>7.2f}")
    a = result["all_graphs_ms"]
    print(f"{'all ' + str(len(paths)) + ' graphs':<38}{a['former']:>11.1f}{a['onnx']:>9.1f}{a['onnx_over_former']:>7.2f}")
    print(f"\n{'scenario (median of ' + str(args.procs) + ' processes)':<40}{'former':>10}{'onnx':>10}")
    for scenario, s in memory.items():
        print(f"{scenario + ': peak RSS above start, MB':<40}{s['former']['peak_delta_mb']:>10.1f}"
              f"{s['onnx']['peak_delta_mb']:>10.1f}")
        print(f"{scenario + ': seconds':<40}{s['former']['s']:>10.2f}{s['onnx']['s']:>10.2f}")
        print(f"{scenario + ': CPU seconds':<40}{s['former']['cpu_s']:>10.2f}{s['onnx']['cpu_s']:>10.2f}")
    o = memory["open"]
    print(f"{'open: rss_open_bytes (after trim), MB':<40}{o['former']['rss_open_mb']:>10.1f}"
          f"{o['onnx']['rss_open_mb']:>10.1f}")
    print(f"import onnx: {result['onnx_import']['s']} s, +{result['onnx_import']['rss_mb']} MB")
    out = RESULTS / "initializer_reader.json"
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
