"""Unstable timings: one summary paragraph, with advice that fits the device, and the
CPU thread rule that keeps the tail steady."""

from __future__ import annotations

import io

import pytest

from adn_edge.bench import noise, threads
from adn_edge.bench.report import print_table


def report(cvs: dict[str, float], kind: str = "cpu", **device) -> dict:
    subs = {}
    for code, cv in cvs.items():
        subs[code] = {"latency_ms": {"mean": 1.0, "p50": 1.0, "p90": 1.1, "p99": 1.2, "min": 0.9, "max": 1.3,
                                     "std": cv}, "throughput_ips": 1000.0, "iterations": 100, "latency_cv": cv,
                      "power_w": None, "energy_mj": None, "energy_above_idle_mj": None, "power_samples": None}
    dev = {"kind": kind, "name": "test", "power_mode": None,
           "cpu": {"usable_cpus": 2, "logical_cpus": 2, "threads": None, "governor": None, "loadavg": 0.1}}
    dev.update(device)
    return {"schema": 1, "device": dev, "backend": "onnxruntime", "batch": 1,
            "power": {"source": "none", "rail": None, "idle_w": None, "interval_ms": None}, "subnets": subs,
            "settings": {"threads": 2}}


def test_one_paragraph_lists_every_unstable_subnet_worst_first():
    r = report({"0000": 0.02, "0101": 0.30, "1111": 0.09, "0011": 0.06})
    block = noise.summary(r, 0.05)
    assert block["unstable"] == {"0101": 0.30, "1111": 0.09, "0011": 0.06}
    text = block["text"]
    assert text.count("\n") == 0 and "3 of 4 sub-networks" in text
    assert text.index("0101 30%") < text.index("1111 9%") < text.index("0011 6%") and "0000" not in text
    assert "p99" in text  # says why it matters: budgets are held to it


def test_stable_timings_say_nothing():
    block = noise.summary(report({"0000": 0.01, "1111": 0.04}), 0.05)
    assert block["text"] is None and block["unstable"] == {} and block["advice"] is None


def test_paced_noise_is_listed_too():
    r = report({"0000": 0.01})
    r["subnets"]["0000"]["paced"] = {"latency_cv": 0.4}
    text = noise.summary(r, 0.05)["text"]
    assert "paced loop 1 of 1 (0000 40%)" in text


def test_cpu_advice_is_about_threads_load_and_governor_not_gpu_clocks():
    r = report({"0000": 0.2}, cpu={"usable_cpus": 2, "logical_cpus": 2, "threads": 2, "governor": "powersave",
                                  "loadavg": 3.5})
    text = noise.advice(r["device"], r["settings"])
    assert "--threads 1" in text and "load average 3.50" in text
    assert "cpupower frequency-set -g performance" in text and "'powersave'" in text
    assert "jetson_clocks" not in text and "nvidia-smi" not in text


def test_cpu_advice_drops_what_is_already_right():
    dev = report({})["device"]
    dev["cpu"].update(threads=1, governor="performance", loadavg=0.1)
    text = noise.advice(dev, {"threads": 1})
    assert "--threads" not in text and "cpupower" not in text and "load average" not in text
    assert "more iterations" in text


def test_jetson_and_desktop_gpu_advice():
    orin = noise.advice({"kind": "orin", "power_mode": "15W", "jetson": {"jetson_clocks": False}})
    assert "sudo jetson_clocks" in orin and "nvidia-smi" not in orin and "cpupower" not in orin
    pinned = noise.advice({"kind": "orin", "power_mode": "MAXN", "jetson": {"jetson_clocks": True}})
    assert "jetson_clocks`" not in pinned
    gpu = noise.advice({"kind": "cuda", "power_mode": "300 W limit"})
    assert "nvidia-smi -lgc" in gpu and "jetson_clocks" not in gpu and "cpupower" not in gpu


def test_the_table_is_followed_by_one_warning_not_one_per_subnet():
    r = report({"0000": 0.2, "0101": 0.3, "1111": 0.25})
    for e in r["subnets"].values():
        e["warning"] = "latency is unstable"
    r["noise"] = noise.summary(r, 0.05)
    from rich.console import Console

    buf = io.StringIO()
    print_table(r, Console(file=buf, width=200, highlight=False))
    out = buf.getvalue()
    assert out.count("warning") == 1 and "3 of 3 sub-networks" in out


@pytest.mark.parametrize(("usable", "expected"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_thread_rule_leaves_one_cpu_free(usable, expected):
    assert threads.default_cpu_threads(usable) == expected


def test_usable_cpus_follow_affinity_and_cgroup_quota(monkeypatch):
    import adn_edge.bench.machine as machine

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(machine, "cgroup_cpu_quota", lambda root=None: None)
    assert threads.usable_cpus() == 8 and threads.default_cpu_threads() == 7
    monkeypatch.setattr(machine, "cgroup_cpu_quota", lambda root=None: 2.5)
    assert threads.usable_cpus() == 2 and threads.default_cpu_threads() == 1


def test_a_wall_of_noisy_subnets_is_cut_to_the_worst():
    r = report({format(i, "04b"): 0.10 + i / 100 for i in range(16)})
    text = noise.summary(r, 0.05)["text"]
    assert "16 of 16 sub-networks (1111 25%, 1110 24%" in text and "and 10 more" in text and "0000 10%" not in text


def test_competing_load_is_measured_while_the_bench_runs_not_guessed_from_the_load_average():
    dev = report({})["device"]
    dev["cpu"].update(threads=1, loadavg=1.8, other_load={"other_cpus": 0.05, "steal_cpus": 0.0, "seconds": 6.0})
    quiet = noise.advice(dev, {"threads": 1})
    assert "busy" not in quiet and "load average" not in quiet  # the 1.8 was the benchmark itself
    dev["cpu"]["other_load"] = {"other_cpus": 1.3, "steal_cpus": 0.4, "seconds": 6.0}
    busy = noise.advice(dev, {"threads": 1})
    assert "kept 1.3 of 2 CPUs busy" in busy and "hypervisor took 0.4 CPUs" in busy


def test_other_load_subtracts_the_benchmarks_own_cpu_time(tmp_path):
    from adn_edge.bench.machine import load_probe, other_load

    start = {"wall": 10.0, "busy": 100.0, "steal": 5.0, "own": 3.0}
    end = {"wall": 14.0, "busy": 106.0, "steal": 5.4, "own": 7.0}  # 6 s busy, 4 of them ours, over 4 s
    assert other_load(start, end) == {"other_cpus": 0.5, "steal_cpus": 0.1, "seconds": 4.0}
    assert other_load(None, end) is None and other_load(end, end) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text("cpu  100 5 50 1000 7 1 2 30 0 0\ncpu0 50 2 25 500 3 0 1 15 0 0\n")
    probe = load_probe(tmp_path)
    import os

    hz = os.sysconf("SC_CLK_TCK")
    assert probe["busy"] == pytest.approx((100 + 5 + 50 + 1 + 2) / hz) and probe["steal"] == pytest.approx(30 / hz)
    (tmp_path / "proc" / "stat").write_text("intr 1 2 3\n")
    assert load_probe(tmp_path) is None
