"""Choosing sub-networks from bench/eval results in the model directory."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher, Policy
from tests.runtime._helpers import CODES, bench_report


def cost(code: str) -> float:
    """A latency model: stage k costs 1 + k when it runs full, half of that skipped."""
    return sum((1 + k) * (1.0 if c == "1" else 0.5) for k, c in enumerate(code))


@pytest.fixture()
def pdir(model_dir, tmp_path):
    """Only the manifest: policies read nothing else."""
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(model_dir / "manifest.json", d)
    return d


def write(d, name, obj):
    (d / name).write_text(json.dumps(obj))


def test_no_bench_results_is_a_clear_error(pdir):
    p = Policy.from_directory(pdir)
    with pytest.raises(AdnError, match="adn-edge bench"):
        p.fastest_within(10.0)
    assert p.most_accurate_within() == "1111"  # no budget: the most accurate (by GMACs) of all
    assert p.quality_by == "gmacs"
    assert p.ladder()[0] == "0000" and p.ladder()[-1] == "1111"


def test_gmacs_order_without_accuracy(pdir):
    write(pdir, "bench-cpu.json", bench_report({c: cost(c) for c in CODES}))
    p = Policy.from_directory(pdir)
    assert p.sources["quality"] == "gmacs"
    for budget in (5.0, 6.0, 7.5, 10.0, 100.0):
        got = p.fastest_within(budget)
        fits = [c for c in CODES if cost(c) <= budget]
        assert cost(got) <= budget
        assert p.candidates[got].gmacs == max(p.candidates[c].gmacs for c in fits)
    assert p.fastest_within(100.0) == "1111"
    assert p.fastest_within(1.0) == "0000"  # nothing fits: the fastest
    with pytest.raises(AdnError, match="No sub-network fits latency <= 1 ms; the closest is 0000"):
        p.fastest_within(1.0, strict=True)


def test_nothing_fits_is_explicit(pdir):
    """fastest_within falls back to the fastest sub-network when nothing fits; decide()
    returns the same code and says whether it fits."""
    from adn_edge.runtime.policies import Decision

    write(pdir, "bench-cpu.json", bench_report({c: cost(c) for c in CODES}))
    p = Policy.from_directory(pdir)
    d = p.decide(latency_ms=1.0)
    assert isinstance(d, Decision) and not d.fits and d.code == "0000" == p.fastest_within(1.0)
    assert d.budgets == {"latency": 1.0} and d.measured == {"latency": cost("0000")}
    assert d.miss == pytest.approx(cost("0000") / 1.0) and d.miss > 1 and str(d) == "0000"
    ok = p.decide(latency_ms=7.5)
    assert ok.fits and ok.code == p.fastest_within(7.5) and ok.miss <= 1
    assert p.decide().fits and p.decide().code == "1111" and p.decide().miss is None  # no budget
    write(pdir, "bench-orin.json", bench_report({c: cost(c) for c in CODES}, {c: 2 * cost(c) for c in CODES},
                                                 backend="tensorrt", device="orin"))
    both = Policy.from_directory(pdir, device="orin").decide(latency_ms=1.0, energy_mj=2.0)
    assert not both.fits and both.code == "0000" and set(both.measured) == {"latency", "energy"}
    assert both.miss == pytest.approx(max(cost("0000") / 1.0, 2 * cost("0000") / 2.0))
    for method in (Policy.fastest_within, Policy.most_accurate_within, Policy.decide):
        assert "nothing fits" in " ".join(method.__doc__.split()), method


def test_accuracy_overrides_gmacs(pdir):
    write(pdir, "bench-cpu.json", bench_report({c: cost(c) for c in CODES}))
    # make deep early stages worthless and the last stage precious, against GMACs order
    acc = {subnet.to_skip_cfg(c): {"top1": 50 + 10 * int(c[3]) + int(c[0]), "top5": 90, "samples": 100}
           for c in CODES}
    write(pdir, "eval.json", {"schema": 1, "dataset": "test", "subnets": acc})
    p = Policy.from_directory(pdir)
    assert p.sources["quality"] == "accuracy" and p.sources["eval"].endswith("eval.json")
    got = p.fastest_within(7.0)
    assert got.endswith("1") and cost(got) <= 7.0
    assert p.candidates[got].accuracy == max(p.candidates[c].accuracy for c in CODES if cost(c) <= 7.0)
    # every choice is Pareto-optimal
    front = p.pareto()
    assert got in front and "1110" not in front  # 1110 is slower than 0001 and less accurate


def test_energy_budget(pdir):
    lat = {c: cost(c) for c in CODES}
    write(pdir, "bench-cpu.json", bench_report(lat))
    p = Policy.from_directory(pdir)
    with pytest.raises(AdnError, match="No energy measurements"):
        p.most_accurate_within(energy_mj=10)
    energy = {c: 3.0 * cost(c) for c in CODES}
    energy["1111"] = 1.0  # pretend the super-net is frugal
    write(pdir, "bench-orin.json", bench_report(lat, energy, backend="tensorrt", device="orin"))
    p = Policy.from_directory(pdir, device="orin")
    assert p.most_accurate_within(energy_mj=2.0) == "1111"
    assert p.most_accurate_within(latency_ms=6.0, energy_mj=100.0) != "1111"
    with pytest.raises(AdnError, match="has no bench-jetson.json"):
        Policy.from_directory(pdir, device="jetson")


def test_bench_file_follows_backend(pdir):
    write(pdir, "bench-cpu.json", bench_report({c: 1.0 for c in CODES}, backend="onnxruntime"))
    write(pdir, "bench-cuda.json", bench_report({c: 2.0 for c in CODES}, backend="torch"))
    os.utime(pdir / "bench-cpu.json", (1, 1))  # older, but it is the onnxruntime one
    assert Policy.from_directory(pdir, backend="onnxruntime").sources["bench"].endswith("bench-cpu.json")
    assert Policy.from_directory(pdir, backend="torch").sources["bench"].endswith("bench-cuda.json")
    assert Policy.from_directory(pdir).sources["bench"].endswith("bench-cuda.json")  # newest


def test_bad_result_files(pdir):
    write(pdir, "eval.json", {"dataset": "x", "subnets": {}})
    with pytest.raises(AdnError, match="not an evaluation result of schema 1"):
        Policy.from_directory(pdir)
    (pdir / "eval.json").unlink()
    write(pdir, "bench-cpu.json", {"schema": 2, "subnets": {}})
    with pytest.raises(AdnError, match="does not match the bench report schema"):
        Policy.from_directory(pdir)
    write(pdir, "bench-cpu.json", bench_report({c: 1.0 for c in CODES}))
    with pytest.raises(AdnError, match="stat must be one of"):
        Policy.from_directory(pdir, stat="p42")
    with pytest.raises(AdnError, match="budget must be positive"):
        Policy.from_directory(pdir).fastest_within(0)


def test_switcher_policy_methods(model_dir, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(model_dir, d, ignore=shutil.ignore_patterns("*seg*"))
    write(d, "bench-cpu.json", bench_report({c: cost(c) for c in CODES}))
    with EngineSwitcher.open(d, subnets=["1111", "1010", "0000"], threads=1, segmented=False) as sw:
        assert set(sw.policy.candidates) == {"1111", "1010", "0000"}  # only what is open
        assert sw.fastest_within(latency_ms=100) == "1111"
        assert sw.fastest_within(latency_ms=cost("1010")) == "1010"
        assert sw.most_accurate_within(latency_ms=cost("1010") - 0.01) == "0000"
        assert sw.pareto() == ["0000", "1010", "1111"]


def bench_of(policy: Policy) -> str:
    return os.path.basename(policy.sources["bench"] or "none")


def test_monolithic_policies_ignore_segmented_reports(pdir):
    write(pdir, "bench-cpu.json", bench_report({c: 1.0 for c in CODES}))
    write(pdir, "bench-cpu-segmented.json", bench_report({c: 2.0 for c in CODES}, segmented=True))
    os.utime(pdir / "bench-cpu.json", (1, 1))  # older, but the only monolithic one
    for kwargs in ({}, {"backend": "onnxruntime"}, {"device": "cpu"}, {"segmented": False}):
        p = Policy.from_directory(pdir, **kwargs)
        assert bench_of(p) == "bench-cpu.json" and p.sources["bench_mode"] == "monolithic", kwargs
        assert p.candidates["1111"].latency_ms == 1.0
    (pdir / "bench-cpu.json").unlink()
    p = Policy.from_directory(pdir, backend="onnxruntime")
    assert p.sources["bench"] is None
    with pytest.raises(AdnError, match="adn-edge bench"):
        p.fastest_within(10.0)
    with pytest.raises(AdnError, match="has no bench-cpu.json") as e:
        Policy.from_directory(pdir, device="cpu")
    assert "--segmented" not in (e.value.hint or "")


def test_segmented_policies_prefer_segmented_reports_of_their_backend(pdir):
    write(pdir, "bench-cpu.json", bench_report({c: 1.0 for c in CODES}))
    write(pdir, "bench-cpu-segmented.json", bench_report({c: 2.0 for c in CODES}, segmented=True))
    write(pdir, "bench-cuda-segmented.json", bench_report({c: 3.0 for c in CODES}, backend="torch", device="cuda",
                                                          segmented=True))
    os.utime(pdir / "bench-cpu-segmented.json", (1, 1))  # the oldest, but the one of this backend and mode
    for kwargs in ({"backend": "onnxruntime-segmented"}, {"backend": "onnxruntime", "segmented": True},
                   {"device": "cpu", "segmented": True}):
        p = Policy.from_directory(pdir, **kwargs)
        assert bench_of(p) == "bench-cpu-segmented.json" and p.sources["bench_mode"] == "segmented", kwargs
        assert p.candidates["1111"].latency_ms == 2.0 and not p.notes
    assert bench_of(Policy.from_directory(pdir, segmented=True)) == "bench-cuda-segmented.json"  # newest segmented


def test_segmented_policies_fall_back_to_monolithic_reports_with_a_note(pdir):
    write(pdir, "bench-cpu.json", bench_report({c: 1.0 for c in CODES}))
    write(pdir, "bench-cuda-segmented.json", bench_report({c: 3.0 for c in CODES}, backend="torch", device="cuda",
                                                          segmented=True))
    os.utime(pdir / "bench-cpu.json", (1, 1))
    for kwargs in ({"backend": "onnxruntime-segmented"}, {"device": "cpu", "segmented": True}):
        p = Policy.from_directory(pdir, **kwargs)
        assert bench_of(p) == "bench-cpu.json" and p.sources["bench_mode"] == "monolithic", kwargs
        assert "measured on the monolithic graphs" in p.notes[0]
    with pytest.raises(AdnError, match="no bench-orin-segmented.json or bench-orin.json") as e:
        Policy.from_directory(pdir, device="orin", segmented=True)
    assert "--device orin --segmented" in (e.value.hint or "")


def test_switchers_read_the_report_of_their_mode(model_dir, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    write(d, "bench-cpu.json", bench_report({c: cost(c) for c in CODES}))
    write(d, "bench-cpu-segmented.json", bench_report({c: 2 * cost(c) for c in CODES}, segmented=True))
    with EngineSwitcher.open(d, subnets=["1111", "0000"], threads=1, warmup=False, segmented=False) as mono, \
            EngineSwitcher.open(d, segmented=True, threads=1, warmup=False) as seg:
        assert bench_of(mono.policy) == "bench-cpu.json"
        assert bench_of(seg.policy) == "bench-cpu-segmented.json"
        assert seg.policy.candidates["1111"].latency_ms == 2 * cost("1111")


def test_policies_read_the_report_of_the_precision_that_runs(pdir):
    """An INT8 bench must not budget an FP32 switcher: the report of the switcher's
    precision wins even when older; another precision only stands in, with a note."""
    write(pdir, "bench-cpu.json", bench_report({c: cost(c) for c in CODES}, precision="fp32"))
    write(pdir, "bench-cpu-int8.json", bench_report({c: cost(c) / 3 for c in CODES}, precision="int8"))
    os.utime(pdir / "bench-cpu.json", (1, 1))  # the fp32 report is the older one
    fp32 = Policy.from_directory(pdir, backend="onnxruntime", precision="fp32")
    assert bench_of(fp32) == "bench-cpu.json" and fp32.candidates["1111"].latency_ms == cost("1111")
    assert not fp32.notes
    int8 = Policy.from_directory(pdir, device="cpu", precision="int8")
    assert bench_of(int8) == "bench-cpu-int8.json"
    fp16 = Policy.from_directory(pdir, backend="onnxruntime", precision="fp16")
    assert bench_of(fp16) == "bench-cpu-int8.json"  # none at fp16: the newest stands in
    assert any("measured at int8; this switcher runs fp16" in n for n in fp16.notes)
