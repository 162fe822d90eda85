"""Writing ``bench-<device>.json``, its CSV twin and the terminal table (docs/model-directory.md).

The JSON is the contract: users' scripts and :meth:`EngineSwitcher.fastest_within`
read it, so it is built here and checked against the schema in
:mod:`adn_edge.modeldir.results` (where readers check it too), and written atomically.
Everything beyond the contract's keys is welcome extra (machine state, settings,
sample intervals), but a power or energy number is ``null`` whenever no meter was
used: a reader must never mistake "not measured" for zero.

Typical assembly by the harness::

    subnets[code] = subnet_result(latency_stats(times, batch), energy)   # energy may be None
    report = make_report(device=machine_state("orin"), backend="tensorrt", batch=1,
                         power=power_block(src.describe(), idle), subnets=subnets)
    path = write_report(report, model_dir)
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adn_edge.fileio import write_json, write_text
from adn_edge.modeldir.names import bench_name
from adn_edge.modeldir.results import ENERGY_KEYS, LATENCY_KEYS, SCHEMA, validate_bench

if TYPE_CHECKING:
    from adn_edge.bench.stats import LatencyStats
    from adn_edge.power.energy import InferenceEnergy, WindowPower

NOT_MEASURED = "energy not measured: no power source was used (--power none)"


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def subnet_result(stats: LatencyStats, energy: InferenceEnergy | None = None, **extra: Any) -> dict[str, Any]:
    """One ``subnets[code]`` entry from latency stats and (optionally) per-inference energy.

    ``extra`` keys (``gmacs``, ``accuracy``, ``cpu_gpu_w``, ``host_overhead_ms`` ...) are
    kept as they are, after the contract's keys.
    """
    entry: dict[str, Any] = {
        "latency_ms": {k: round(v, 4) for k, v in stats.latency_ms().items()},
        "throughput_ips": round(stats.throughput_ips, 3),
        "iterations": stats.iterations,
        "power_w": None, "energy_mj": None, "energy_above_idle_mj": None, "power_samples": None,
        "latency_cv": round(stats.cv, 5),
    }
    if stats.warning:
        entry["warning"] = stats.warning
    if energy is not None:
        entry.update(power_w=_r(energy.power_w, 4), energy_mj=_r(energy.energy_mj, 4),
                     energy_above_idle_mj=_r(energy.energy_above_idle_mj, 4), power_samples=energy.power_samples,
                     power_interval_ms=_r(energy.interval_ms, 3), power_run_s=_r(energy.run_s, 4),
                     power_method=energy.method, energy_inferences=energy.inferences)
    entry.update(extra)
    return entry


def power_block(describe: Mapping[str, Any], idle: WindowPower | None = None, **extra: Any) -> dict[str, Any]:
    """The report's ``power`` block from a source's ``describe()`` and its idle baseline."""
    source = describe.get("source", "none")
    block: dict[str, Any] = {"source": source, "rail": describe.get("rail"),
                             "idle_w": _r(idle.mean_w, 4) if idle is not None else None,
                             "interval_ms": describe.get("interval_ms"),
                             "measured": source != "none"}
    if source == "none":
        block["note"] = describe.get("note", NOT_MEASURED)
    if idle is not None:
        block["idle"] = {"duration_s": _r(idle.duration_s, 3), "samples": idle.samples,
                         "interval_ms": _r(idle.interval_ms, 3), "method": idle.method}
    block.update({k: v for k, v in describe.items() if k not in block})
    block.update(extra)
    return block


def make_report(*, device: Mapping[str, Any], backend: str, batch: int, power: Mapping[str, Any],
                subnets: Mapping[str, Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """Assemble and validate a bench report. ``extra`` (settings, model, ...) is appended."""
    from adn_edge import __version__

    report: dict[str, Any] = {"schema": SCHEMA, "device": dict(device), "backend": backend, "batch": batch,
                              "power": dict(power), "subnets": {k: dict(v) for k, v in subnets.items()},
                              "adn_edge_version": __version__,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report.update(extra)
    validate_bench(report)
    return report


def report_filename(report: Mapping[str, Any]) -> str:
    """The file a report is written to (:func:`adn_edge.modeldir.names.bench_name` of its device, mode and the
    precision its run asked for)."""
    asked = (report.get("settings") or {}).get("precision")
    return bench_name(report["device"]["kind"], bool(report.get("segmented")), asked)


def write_report(report: Mapping[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Validate and write the report into ``directory`` atomically, under :func:`report_filename`."""
    validate_bench(report)
    path = Path(directory) / report_filename(report)
    write_json(path, report)
    return path


# -- CSV and table ------------------------------------------------------------------------

def _rows(report: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    extra_keys: list[str] = []
    rows = []
    for code, e in report["subnets"].items():
        row: dict[str, Any] = {"code": code}
        row.update({f"latency_{k}_ms": v for k, v in e["latency_ms"].items()})
        paced = e.get("paced")
        if isinstance(paced, Mapping):  # --hz: the paced loop's figures beside the hot loop's
            row.update({f"paced_{k}_ms": v for k, v in (paced.get("latency_ms") or {}).items() if k in ("p50", "p99")})
            row.update({f"paced_{k}": paced.get(k) for k in ("latency_cv", "deadline_misses", "hot_deadline_misses",
                                                             "over_hot_p99")})
            for k in row:
                if k.startswith("paced_") and k not in extra_keys:
                    extra_keys.append(k)
        for k, v in e.items():
            if k == "latency_ms" or isinstance(v, (dict, list)):
                continue
            row[k] = v
            if k not in extra_keys:
                extra_keys.append(k)
        rows.append(row)
    lat = [f"latency_{k}_ms" for k in (*LATENCY_KEYS, "std")]
    first = ["throughput_ips", "iterations", *ENERGY_KEYS]
    cols = ["code", *lat, *first, *[k for k in extra_keys if k not in first]]
    return cols, rows


def csv_text(report: Mapping[str, Any]) -> str:
    """One row per sub-network; empty cells where nothing was measured."""
    cols, rows = _rows(report)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    return buf.getvalue()


def write_csv(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    write_text(path, csv_text(report))
    return Path(path)


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_table(report: Mapping[str, Any]) -> Any:
    """A rich Table of the report (imported lazily: the runtime never needs rich)."""
    from rich.table import Table

    dev, pw = report["device"], report["power"]
    measured = pw.get("source") != "none"
    title = (f"bench on {dev.get('name') or dev['kind']} ({dev['kind']}"
             + (f", {dev['power_mode']}" if dev.get("power_mode") else "") + f"), backend {report['backend']}"
             + (" (segmented)" if report.get("segmented") else "") + f", batch {report['batch']}")
    caption = (f"power: {pw['source']} rail {pw.get('rail')}, idle {_fmt(pw.get('idle_w'))} W, "
               f"interval {_fmt(pw.get('interval_ms'), 0)} ms" if measured else NOT_MEASURED)
    rounds = (report.get("settings") or {}).get("rounds_used")
    counts = sorted({e["iterations"] for e in report["subnets"].values() if e.get("iterations")})
    calls = (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}") if counts else None
    timed = (f" ({calls} calls each" + (f", interleaved in {rounds} rounds" if rounds and rounds > 1 else "") + ")"
             if calls else "")
    caption = (f"latency in ms{timed}; " + ("energy per inference in mJ, n = power samples; " if measured else "")
               + caption)
    paced = report.get("paced")
    if paced:
        caption += (f"; paced: one call every {paced['period_ms']:g} ms ({paced['hz']:g} Hz), sleeping between; "
                    f"miss = calls over {paced['deadline_ms']:g} ms, paced / hot loop")
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    cols = ["code", "mean", "p50", "p99", "cv%", "img/s"]
    if paced:
        cols += ["paced p50", "paced p99", "paced cv%", "miss"]
    if measured:
        cols += ["W", "mJ", "mJ>idle", "n"]
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i == 0 else "right", no_wrap=True)
    for code, e in report["subnets"].items():
        lat = e["latency_ms"]
        cv = e.get("latency_cv")
        row = [code + (" !" if e.get("warning") else ""), _fmt(lat["mean"], 3), _fmt(lat["p50"], 3),
               _fmt(lat["p99"], 3), _fmt(cv * 100 if cv is not None else None, 1), _fmt(e["throughput_ips"], 1)]
        if paced:
            p = e.get("paced") or {}
            plat = p.get("latency_ms") or {}
            pcv = p.get("latency_cv")
            row += [_fmt(plat.get("p50"), 3), _fmt(plat.get("p99"), 3), _fmt(pcv * 100 if pcv is not None else None, 1),
                    f"{_fmt(p.get('deadline_misses'))}/{_fmt(p.get('hot_deadline_misses'))}"]
        if measured:
            row += [_fmt(e["power_w"]), _fmt(e["energy_mj"]), _fmt(e["energy_above_idle_mj"]),
                    _fmt(e["power_samples"])]
        t.add_row(*row)
    return t


def print_table(report: Mapping[str, Any], console: Any = None) -> None:
    """Print the table, then one paragraph on unstable timings when there were any
    (sub-networks marked ``!``; :mod:`adn_edge.bench.noise`)."""
    if console is None:
        from rich.console import Console

        console = Console(highlight=False)
    console.print(render_table(report))
    text = noise_text(report)
    if text:
        from rich.markup import escape

        console.print(f"[yellow]warning:[/] {escape(text)}")


def noise_text(report: Mapping[str, Any]) -> str | None:
    """The report's one paragraph on unstable timings (None when all were stable)."""
    noise = report.get("noise")
    if isinstance(noise, Mapping):
        return noise.get("text")
    from adn_edge.bench.noise import summary
    from adn_edge.bench.stats import CV_WARN

    return summary(report, CV_WARN)["text"]  # type: ignore[no-any-return]
