"""The tegrastats line parser against every recorded board, and against garbage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adn_edge.power.tegrastats_format import ParseFailure, TegrastatsReading, parse_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tegrastats"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"tegrastats fixtures not found at {FIXTURES}")


def fixture_lines() -> list[tuple[str, int, str]]:
    if not FIXTURES.is_dir():
        return []
    out = []
    for f in sorted(FIXTURES.glob("*.txt")):
        for i, line in enumerate(f.read_text().splitlines()):
            if line.strip():
                out.append((f.name, i, line))
    return out


# Hand-read from the fixture files: (module W, module rail, summed, cpu+gpu W, cpu+gpu rail,
# some rails in mW, RAM used/total, cores, GR3D freqs, a temperature).
EXPECTED = {
    ("agx_orin_jp5.txt", 0): dict(
        module_w=(4368 + 1588 + 4233 + 403) / 1000, module_rail="VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO",
        summed=True, cpu_gpu_w=(4368 + 1588) / 1000, cpu_gpu_rail="VDD_GPU_SOC+VDD_CPU_CV",
        rails={"VDD_GPU_SOC": 4368, "VDD_CPU_CV": 1588, "VIN_SYS_5V0": 4233, "VDDQ_VDD2_1V8AO": 403, "NC": 0},
        ram=(6589, 30587), cores=12, gpu_freq=(1300,), temp=("cpu", 52.625)),
    ("nano_jp4.txt", 0): dict(
        module_w=1.750, module_rail="POM_5V_IN", summed=False, cpu_gpu_w=(366 + 0) / 1000,
        cpu_gpu_rail="POM_5V_CPU+POM_5V_GPU", rails={"POM_5V_IN": 1750, "POM_5V_GPU": 0, "POM_5V_CPU": 366},
        ram=(1923, 3964), cores=4, gpu_freq=(76,), temp=("gpu", 40.0)),
    ("orin_nano_jp6.txt", 0): dict(
        module_w=5.704, module_rail="VDD_IN", summed=False, cpu_gpu_w=0.831, cpu_gpu_rail="VDD_CPU_GPU_CV",
        rails={"VDD_IN": 5704, "VDD_CPU_GPU_CV": 831, "VDD_SOC": 1624},
        ram=(2461, 7620), cores=6, gpu_freq=(305,), temp=("cpu", 46.531)),
    ("orin_nano_jp6.txt", 1): dict(
        module_w=4.744, module_rail="VDD_IN", summed=False, cpu_gpu_w=1.273, cpu_gpu_rail="VDD_CPU_GPU_CV",
        rails={"VDD_IN": 4744, "VDD_CPU_GPU_CV": 1273, "VDD_SOC": 1234},
        ram=(2513, 7620), cores=6, gpu_freq=(), temp=("gpu", 51.593)),
    ("orin_nx_jp6.txt", 0): dict(
        module_w=5.469, module_rail="VDD_IN", summed=False, cpu_gpu_w=0.970, cpu_gpu_rail="VDD_CPU_GPU_CV",
        rails={"VDD_IN": 5469, "VDD_CPU_GPU_CV": 970, "VDD_SOC": 1579},
        ram=(3408, 15657), cores=8, gpu_freq=(305,), temp=("cv0", 52.781)),
    ("tx2_jp4.txt", 0): dict(
        module_w=3.631, module_rail="VDD_IN", summed=False, cpu_gpu_w=(697 + 371) / 1000,
        cpu_gpu_rail="VDD_CPU+VDD_GPU",
        rails={"VDD_IN": 3631, "VDD_CPU": 697, "VDD_GPU": 371, "VDD_SOC": 651, "VDD_WIFI": 0, "VDD_DDR": 881},
        ram=(2633, 7850), cores=6, gpu_freq=(1134,), temp=("tdiode", 34.25)),
    ("xavier_nx_jp5.txt", 0): dict(
        module_w=2.763, module_rail="VDD_IN", summed=False, cpu_gpu_w=0.650, cpu_gpu_rail="VDD_CPU_GPU_CV",
        rails={"VDD_IN": 2763, "VDD_CPU_GPU_CV": 650, "VDD_SOC": 650},
        ram=(3168, 6851), cores=6, gpu_freq=(114,), temp=("thermal", 45.6)),
}


def test_every_fixture_line_is_covered_by_expectations():
    assert {(f, i) for f, i, _ in fixture_lines()} == set(EXPECTED)


@pytest.mark.parametrize("name,index,line", fixture_lines(), ids=lambda v: str(v)[:24])
def test_fixture_line_parses_to_real_rail_values(name, index, line):
    exp = EXPECTED[(name, index)]
    r = parse_line(line)
    assert isinstance(r, TegrastatsReading) and r.ok
    assert r.module_w == pytest.approx(exp["module_w"], abs=1e-9)
    assert r.module_rail == exp["module_rail"]
    assert r.module_summed is exp["summed"]
    assert r.cpu_gpu_w == pytest.approx(exp["cpu_gpu_w"], abs=1e-9)
    assert r.cpu_gpu_rail == exp["cpu_gpu_rail"]
    for rail, mw in exp["rails"].items():
        assert r.rails_mw[rail] == mw
    assert (r.ram_used_mb, r.ram_total_mb) == exp["ram"]
    assert len(r.cpu_load_pct) == len(r.cpu_freq_mhz) == exp["cores"]
    assert r.gpu_freq_mhz == exp["gpu_freq"]
    sensor, value = exp["temp"]
    assert r.temps_c[sensor] == pytest.approx(value)


def test_second_value_is_the_running_average_not_integrated():
    line = fixture_lines()[[(f, i) for f, i, _ in fixture_lines()].index(("orin_nano_jp6.txt", 1))][2]
    r = parse_line(line)
    assert r.rails_mw["VDD_IN"] == 4744 and r.rails_avg_mw["VDD_IN"] == 6179
    assert r.module_w == pytest.approx(4.744)


def test_agx_orin_sums_rails_excluding_nc_and_says_so():
    (line,) = [ln for f, _, ln in fixture_lines() if f == "agx_orin_jp5.txt"]
    r = parse_line(line)
    assert r.module_summed and "NC" not in r.module_rail.split("+")
    assert r.rails_mw["NC"] == 0 and r.rails_mw["NC_2"] == 0  # both NC channels kept, neither summed
    assert r.temps_c["cv0"] is None and r.temps_c["cv1"] is None  # -256C = sensor off
    assert r.gpu_load_pct == 0 and r.emc_freq_mhz == 3199


def test_jp6_non_root_line_without_frequencies():
    r = parse_line([ln for f, i, ln in fixture_lines() if (f, i) == ("orin_nano_jp6.txt", 1)][0])
    assert r.gpu_load_pct == 0 and r.gpu_freq_mhz == () and r.emc_load_pct is None
    assert r.date == "08-10-2026 21:39:51"


def test_jetpack4_lines_have_no_unit_and_no_date():
    r = parse_line([ln for f, _, ln in fixture_lines() if f == "nano_jp4.txt"][0])
    assert r.date is None and r.rails_avg_mw["POM_5V_IN"] == 1628 and r.swap_used_mb == 191


def test_jetpack7_three_values_per_rail():
    r = parse_line("RAM 10000/128000MB CPU [1%@972,2%@972] VDD_IN 5139mW/5139mW/5139mW "
                   "VDD_GPU 1200mW/1100mW/1500mW VDD_CPU_SOC_MSS 900mW/950mW/1000mW gpu@62.906C/95.0C")
    assert r.ok and r.module_rail == "VDD_IN" and r.module_w == pytest.approx(5.139)
    assert r.cpu_gpu_rail == "VDD_GPU+VDD_CPU_SOC_MSS" and r.cpu_gpu_w == pytest.approx(2.1)
    assert r.rails_avg_mw["VDD_GPU"] == 1100
    assert r.temps_c["gpu"] == pytest.approx(62.906)


def test_multi_gpc_gpu_frequency_offline_cores_and_case():
    r = parse_line("RAM 1/2MB CPU [5%@1200,off,off,7%@1200] GR3D_FREQ 12%@[305,612] CPU@52.5C cpu@40C "
                   "VDD_IN 4000mW/4000mW")
    assert r.cpu_load_pct == (5, None, None, 7) and r.cpu_freq_mhz == (1200, None, None, 1200)
    assert r.gpu_load_pct == 12 and r.gpu_freq_mhz == (305, 612)
    assert "cpu" in r.temps_c  # names lower-cased across JetPacks


def test_unknown_fields_are_ignored():
    base = [ln for f, i, ln in fixture_lines() if (f, i) == ("orin_nx_jp6.txt", 0)][0]
    noisy = base.replace("APE 174", "APE 174 NEWENGINE 12%@99 FOO off BAR_FREQ [1,2] WHATEVER=3")
    a, b = parse_line(base), parse_line(noisy)
    assert b.ok and b.rails_mw == a.rails_mw and b.module_w == a.module_w and b.temps_c == a.temps_c


def test_memory_fields_are_not_mistaken_for_rails():
    r = parse_line("RAM 2461/7620MB (lfb 3x2MB) SWAP 1243/3810MB (cached 5MB) IRAM 0/252kB(lfb 252kB)")
    assert r.ok and r.rails_mw == {} and r.module_w is None


@pytest.mark.parametrize("line", ["", "   ", "hello world", "RAM", "Segmentation fault", "\x00\x01\x02",
                                  "VDD_IN 5704mW/5704", "CPU [", "@@@@ 12/34 56/78MB"])
def test_garbage_is_a_parse_failure_not_an_exception(line):
    r = parse_line(line)
    assert isinstance(r, ParseFailure) and not r.ok and r.reason


def test_bytes_are_accepted():
    r = parse_line(b"RAM 1/2MB VDD_IN 1000/1000\n")
    assert r.ok and r.module_w == pytest.approx(1.0)


def _check_result(r):
    assert isinstance(r, (TegrastatsReading, ParseFailure))
    if r.ok:
        assert r.module_w is None or (math.isfinite(r.module_w) and r.module_w >= 0)
        assert r.cpu_gpu_w is None or (math.isfinite(r.cpu_gpu_w) and r.cpu_gpu_w >= 0)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_random_text_never_raises(text):
    _check_result(parse_line(text))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data):
    _check_result(parse_line(data))


_TOKENS = sorted({tok for _, _, ln in fixture_lines() for tok in ln.split()}) or ["RAM"]


# Rail-like tokens with odd numbers and units: "VDD_IN -12mW/34", "X 1/2/3mW", ...
_RAILISH = st.builds(lambda name, a, b, ua, ub, third: f"{name} {a}{ua}/{b}{ub}{third}",
                     st.sampled_from(["VDD_IN", "POM_5V_IN", "NC", "VDD_CPU_GPU_CV", "X_1"]),
                     st.integers(-10**15, 10**15), st.integers(0, 10**15), st.sampled_from(["", "mW", "MB"]),
                     st.sampled_from(["", "mW", "W"]), st.sampled_from(["", "/7", "/7mW", "/"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_TOKENS), st.text(max_size=12),
                          _RAILISH),
                max_size=40))
def test_shuffled_and_corrupted_real_tokens_never_raise(tokens):
    _check_result(parse_line(" ".join(tokens)))


# -- plausibility: a reading that no Jetson can produce is rejected, never integrated ----

_GOOD = "RAM 2461/7620MB CPU [19%@729,14%@729] VDD_IN 5704mW/5704mW VDD_CPU_GPU_CV 831mW/831mW tj@52.6C"


def test_a_plausible_line_is_a_reading():
    r = parse_line(_GOOD)
    assert r.ok and r.module_w == pytest.approx(5.704) and r.temps_c["tj"] == pytest.approx(52.6)


@pytest.mark.parametrize("line,needle", [
    (_GOOD.replace("VDD_IN 5704mW", "VDD_IN 1000000000mW"), "VDD_IN"),        # 1 MW on the module rail
    (_GOOD.replace("VDD_CPU_GPU_CV 831mW", "VDD_CPU_GPU_CV 2000000mW"), "VDD_CPU_GPU_CV"),  # 2 kW on a rail
    (_GOOD.replace("VDD_IN 5704mW", "VDD_IN -5704mW"), "VDD_IN"),             # negative power
    (_GOOD.replace("tj@52.6C", "tj@5000C"), "tj"),                            # hotter than the sun's surface
    (_GOOD.replace("tj@52.6C", "tj@-120C"), "tj"),                            # colder than any board runs
])
def test_implausible_values_reject_the_reading(line, needle):
    from adn_edge.power.tegrastats_format import Implausible

    r = parse_line(line)
    assert isinstance(r, Implausible) and isinstance(r, ParseFailure) and not r.ok
    assert needle in r.reason


def test_summed_module_power_is_checked_too():
    """AGX Orin has no module rail: a sum of plausible rails above 1 kW is still refused."""
    from adn_edge.power.tegrastats_format import Implausible

    line = "RAM 1/2MB " + " ".join(f"VDD_R{i} 900000mW/900000mW" for i in range(3))
    assert isinstance(parse_line(line), Implausible)


def test_sensor_off_is_not_implausible():
    r = parse_line(_GOOD.replace("tj@52.6C", "tj@-256C"))
    assert r.ok and r.temps_c["tj"] is None
