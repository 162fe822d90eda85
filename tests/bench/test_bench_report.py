"""bench-<device>.json (docs/model-directory.md), its CSV and table."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest
from rich.console import Console

from adn_edge.bench.report import (
    csv_text,
    make_report,
    power_block,
    print_table,
    subnet_result,
    write_csv,
    write_report,
)
from adn_edge.bench.stats import latency_stats
from adn_edge.modeldir.results import bench_problems, validate_bench
from adn_edge.errors import AdnError
from adn_edge.power import PowerSample, per_inference, window_power
from adn_edge.power.none import NoPowerSource

CODES = [format(i, "04b") for i in range(15, -1, -1)]


def times(code):
    base = 0.002 + 0.001 * code.count("1")
    return [base * (1 + 0.01 * (i % 5)) for i in range(100)]


def cpu_report():
    subs = {c: subnet_result(latency_stats(times(c)), gmacs=1.0 + c.count("1")) for c in CODES}
    return make_report(device={"kind": "cpu", "name": "Test CPU", "power_mode": None, "threads": 2},
                       backend="onnxruntime", batch=1, power=power_block(NoPowerSource().describe()),
                       subnets=subs, settings={"warmup_s": 1.0})


def orin_report():
    idle = window_power([PowerSample(t=i * 0.05, module_w=4.744) for i in range(41)], 0.0, 2.0)
    subs = {}
    for k, c in enumerate(CODES):
        t0 = 10.0 * (k + 1)
        run = window_power([PowerSample(t=t0 + i * 0.05, module_w=5.704) for i in range(41)], t0, t0 + 2.0)
        subs[c] = subnet_result(latency_stats(times(c)), per_inference(run, 100, idle.mean_w))
    describe = {"source": "tegrastats", "rail": "VDD_IN", "interval_ms": 50, "cpu_gpu_rail": "VDD_CPU_GPU_CV"}
    return make_report(device={"kind": "orin", "name": "NVIDIA Jetson Orin Nano", "power_mode": "15W"},
                       backend="tensorrt", batch=1, power=power_block(describe, idle), subnets=subs)


def test_cpu_report_validates_and_has_null_energy(tmp_path):
    r = cpu_report()
    validate_bench(r)
    assert r["schema"] == 1 and r["power"]["source"] == "none" and r["power"]["idle_w"] is None
    assert "not measured" in r["power"]["note"]
    e = r["subnets"]["1111"]
    assert set(e["latency_ms"]) >= {"mean", "p50", "p90", "p99", "min", "max"}
    assert e["iterations"] == 100 and e["throughput_ips"] > 0
    assert all(e[k] is None for k in ("power_w", "energy_mj", "energy_above_idle_mj", "power_samples"))
    assert e["gmacs"] == 5.0
    path = write_report(r, tmp_path)
    assert path.name == "bench-cpu.json"
    back = json.loads(path.read_text())
    validate_bench(back)
    assert back["subnets"].keys() == r["subnets"].keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-cpu.json"]  # atomic: no temp file left


def test_orin_report_energy_fields():
    r = orin_report()
    e = r["subnets"]["0101"]
    assert e["power_w"] == pytest.approx(5.704)
    assert e["energy_mj"] == pytest.approx(5.704 * 2.0 / 100 * 1000, rel=1e-6)
    assert e["energy_above_idle_mj"] == pytest.approx((5.704 - 4.744) * 2.0 / 100 * 1000, rel=1e-6)
    assert e["power_samples"] == 41
    assert r["power"]["idle_w"] == pytest.approx(4.744) and r["power"]["rail"] == "VDD_IN"
    assert r["power"]["idle"]["samples"] == 41 and r["power"]["interval_ms"] == 50
    assert bench_problems(json.loads(json.dumps(r))) == []


def test_csv(tmp_path):
    r = orin_report()
    path = write_csv(r, tmp_path / "bench-orin.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [row["code"] for row in rows] == CODES
    assert float(rows[0]["energy_mj"]) == pytest.approx(r["subnets"]["1111"]["energy_mj"])
    assert float(rows[0]["latency_p99_ms"]) == pytest.approx(r["subnets"]["1111"]["latency_ms"]["p99"])
    cpu_rows = list(csv.DictReader(io.StringIO(csv_text(cpu_report()))))
    assert cpu_rows[0]["energy_mj"] == "" and cpu_rows[0]["gmacs"] == "5.0"


def test_table_prints_every_code():
    buf = io.StringIO()
    print_table(orin_report(), Console(file=buf, width=200))
    out = buf.getvalue()
    assert all(c in out for c in CODES) and "VDD_IN" in out and "mJ>idle" in out
    buf = io.StringIO()
    print_table(cpu_report(), Console(file=buf, width=200))
    text = " ".join(buf.getvalue().split())  # the caption wraps at the table's width
    assert "not measured" in text and "mJ>idle" not in text


def _broken(mutate):
    r = copy.deepcopy(orin_report())
    mutate(r)
    return bench_problems(r)


@pytest.mark.parametrize("mutate,fragment", [
    (lambda r: r.update(schema=2), "schema"),
    (lambda r: r["device"].update(kind="tpu"), "device.kind"),
    (lambda r: r["device"].pop("power_mode"), "device.power_mode"),
    (lambda r: r.update(backend="tflite"), "backend"),
    (lambda r: r.update(batch=0), "batch"),
    (lambda r: r["power"].update(source="rapl"), "power.source"),
    (lambda r: r["power"].pop("rail"), "power.rail"),
    (lambda r: r["power"].update(source="none"), "must be null"),
    (lambda r: r["subnets"]["1111"]["latency_ms"].pop("p99"), "p99"),
    (lambda r: r["subnets"]["1111"]["latency_ms"].update(min=1e6), "min <= p50"),
    (lambda r: r["subnets"]["1111"].update(iterations=0), "iterations"),
    (lambda r: r["subnets"]["1111"].update(energy_mj=float("nan")), "energy_mj"),
    (lambda r: r["subnets"]["1111"].pop("power_samples"), "power_samples"),
    (lambda r: r["subnets"].update({"TFFT": r["subnets"]["1111"]}), "canonical"),
    (lambda r: r["subnets"].update({"111": r["subnets"]["1111"]}), "same length"),
    (lambda r: r.update(subnets={}), "non-empty"),
])
def test_validator_catches(mutate, fragment):
    problems = _broken(mutate)
    assert problems and any(fragment in p for p in problems), problems


def test_validate_raises_adn_error_and_write_refuses(tmp_path):
    r = orin_report()
    r["backend"] = "tflite"
    with pytest.raises(AdnError, match="bench report schema"):
        validate_bench(r)
    with pytest.raises(AdnError):
        write_report(r, tmp_path)
    assert not list(tmp_path.iterdir())
    assert bench_problems([1, 2]) == ["the report is not a JSON object"]


def test_the_caption_says_how_each_sub_network_was_timed():
    def caption(report):
        buf = io.StringIO()
        print_table(report, Console(file=buf, width=300))
        return " ".join(buf.getvalue().split())

    r = cpu_report()
    n = r["subnets"][CODES[0]]["iterations"]
    assert f"({n} calls each)" in caption(r)
    r["settings"]["rounds_used"] = 3
    assert f"({n} calls each, interleaved in 3 rounds)" in caption(r)
    r["subnets"][CODES[1]]["iterations"] = n + 40  # --duration: the counts differ
    assert f"({n}-{n + 40} calls each, interleaved in 3 rounds)" in caption(r)
