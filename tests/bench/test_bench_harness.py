"""``adn-edge bench`` end to end on the CPU, with and without a (fake) power meter.

The energy run uses a test double of ``tegrastats`` (a script on PATH replaying a
recorded Orin Nano line at the requested interval): it exercises the orchestration,
and its numbers are the fixture's, never a measurement.
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import pytest

from adn_edge.modeldir import manifest
from adn_edge.bench.harness import BenchOptions, run_bench
from adn_edge.modeldir.results import validate_bench
from adn_edge.export import export
from adn_edge.export.segments import export_segments
from adn_edge.models import create_model
from adn_edge.models.random_weights import randomize
from tests._util import FIXTURES, run_cli
from tests.power.test_tegrastats_sampler import FAKE_TEGRASTATS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchdir")
    export(randomize(create_model("resnet_tiny"), input_size=32), out, ["1111", "0101", "0000"])
    return out


def test_cpu_bench_writes_a_valid_report_csv_and_plot(model_dir, capsys) -> None:
    code, out, err = run_cli(["bench", model_dir, "--device", "cpu", "-n", "100", "--warmup", "2",
                              "--warmup-seconds", "0", "--plot", model_dir / "pareto.png", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    validate_bench(report)
    assert report["backend"] == "onnxruntime" and report["device"]["kind"] == "cpu"
    assert report["power"]["source"] == "none" and report["power"]["measured"] is False
    assert list(report["subnets"]) == ["1111", "0101", "0000"]
    for e in report["subnets"].values():
        lat = e["latency_ms"]
        assert e["iterations"] >= 100 and 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
        assert e["energy_mj"] is None and e["power_w"] is None
    on_disk = json.loads((model_dir / "bench-cpu.json").read_text())
    assert on_disk["subnets"].keys() == report["subnets"].keys()
    assert (model_dir / "bench-cpu.csv").read_text().count("\n") >= 4
    assert (model_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def tegrastats_double(tmp_path, monkeypatch) -> None:
    """``tegrastats`` on PATH replaying one recorded Orin Nano line (VDD_IN 5.704 W)."""
    exe = tmp_path / "bin" / "tegrastats"
    exe.parent.mkdir()
    exe.write_text(FAKE_TEGRASTATS.replace("{python}", sys.executable))
    exe.chmod(0o755)
    line = (FIXTURES / "tegrastats" / "orin_nano_jp6.txt").read_text().splitlines()[0]
    lines = tmp_path / "lines.txt"
    lines.write_text(line + "\n")
    monkeypatch.setenv("FAKE_TEGRASTATS_LINES", str(lines))
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")


def test_energy_with_a_tegrastats_double(model_dir, tegrastats_double) -> None:
    opts = BenchOptions(device="cpu", power="tegrastats", subnets=["1111"], iterations=20, warmup_iters=1,
                        warmup_s=0, idle_s=0.5, interval_ms=20)
    report = run_bench(model_dir, opts, write=False)
    e = report["subnets"]["1111"]
    watts = 5.704  # VDD_IN of the replayed line: constant, so energy is power x time exactly
    assert report["power"]["source"] == "tegrastats" and report["power"]["idle_w"] == pytest.approx(watts)
    assert e["power_w"] == pytest.approx(watts, rel=1e-6)
    assert e["power_samples"] >= 20
    assert e["energy_mj"] == pytest.approx(watts * e["power_run_s"] / e["energy_inferences"] * 1000, rel=1e-3)
    assert e["energy_above_idle_mj"] == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_exit_2(model_dir, tmp_path, capsys, monkeypatch) -> None:
    for args, needle in (
        (["bench", model_dir, "--device", "tpu"], "device"),
        (["bench", model_dir, "--device", "cpu", "--batch", "0"], "--batch"),
        (["bench", tmp_path / "nope", "--device", "cpu"], "does not exist"),
        (["bench", model_dir, "--device", "cpu", "--subnet", "1"], "4 skippable stages"),
        (["bench", model_dir, "--device", "cpu", "--subnet", "1010"], "not in this model directory"),
    ):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and needle in err.replace("\n", " "), (args, err)
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats anywhere
    code, _, err = run_cli(["bench", model_dir, "--device", "cpu", "--power", "tegrastats"], capsys)
    assert code == 2 and "tegrastats" in err


def test_segmented_bench_is_reported_apart(tmp_path, capsys) -> None:
    """A segmented run writes bench-cpu-segmented.json (marked ``segmented``) and leaves the
    monolithic report alone, and the other way round."""
    model = randomize(create_model("resnet_tiny"), input_size=32)
    export(model, tmp_path, ["1111"])
    export_segments(model, tmp_path)
    code, out, err = run_cli(["bench", tmp_path, "--device", "cpu", "--segmented", "--subnet", "1111", "--subnet",
                              "0000", "-n", "5", "--warmup", "1", "--warmup-seconds", "0"], capsys)
    assert code == 0, err
    out = out.replace("\n", "")  # rich wraps at the terminal width
    assert "(segmented)" in out and "bench-cpu-segmented.json" in out
    assert not (tmp_path / "bench-cpu.json").exists() and (tmp_path / "bench-cpu-segmented.csv").exists()
    seg = json.loads((tmp_path / "bench-cpu-segmented.json").read_text())
    validate_bench(seg)
    assert seg["segmented"] is True and seg["backend"] == "onnxruntime"
    assert seg["runtime"]["backend"] == "onnxruntime-segmented" and seg["runtime"]["engine"]["segments"] == 8
    # 0000 has no monolithic graph here: its cost comes from the segments record
    assert seg["subnets"]["0000"]["gmacs"] == manifest.load(tmp_path)["segments"]["subnets"]["0000"]["gmacs"]
    # Unsaid, the bench measures what EngineSwitcher.open would run here: the segments.
    auto = run_bench(tmp_path, BenchOptions(subnets=["1111"], iterations=5, warmup_iters=1, warmup_s=0),
                     write=False)
    assert auto["segmented"] is True
    mono = run_bench(tmp_path, BenchOptions(subnets=["1111"], iterations=5, warmup_iters=1, warmup_s=0,
                                            segmented=False))
    assert mono["segmented"] is False and mono["runtime"]["backend"] == "onnxruntime"
    assert json.loads((tmp_path / "bench-cpu.json").read_text())["created"] == mono["created"]
    assert json.loads((tmp_path / "bench-cpu-segmented.json").read_text()) == seg


def test_a_bench_at_another_precision_is_reported_apart(model_dir, tmp_path) -> None:
    """``--precision`` names the report (bench-cpu-fp32.json) and every report records the
    precision that ran, so an INT8 run never replaces the default one."""
    import shutil

    from adn_edge.modeldir.names import bench_name

    model_dir = shutil.copytree(model_dir, tmp_path / "d")
    assert bench_name("orin", False, "int8") == "bench-orin-int8.json"
    assert bench_name("orin", True, "fp16") == "bench-orin-fp16-segmented.json"
    opts = dict(subnets=["1111"], iterations=5, warmup_iters=1, warmup_s=0)
    default = run_bench(model_dir, BenchOptions(**opts))
    asked = run_bench(model_dir, BenchOptions(precision="fp32", **opts))
    assert default["precision"] == asked["precision"] == "fp32"
    assert json.loads((model_dir / "bench-cpu.json").read_text())["created"] == default["created"]
    assert json.loads((model_dir / "bench-cpu-fp32.json").read_text())["created"] == asked["created"]


# -- the paced loop (--hz), threads, noise, accuracies of the precision that ran --------------


class FakeClock:
    """perf_counter and sleep on a simulated clock: calls take what ``durations`` say."""

    def __init__(self, durations):
        self.now, self.durations, self.sleeps = 100.0, list(durations), []

    def perf_counter(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def call(self):
        self.now += self.durations.pop(0)


def test_paced_loop_sleeps_between_calls_and_counts_overruns(monkeypatch):
    import adn_edge.bench.harness as h

    clock = FakeClock([0.01, 0.02, 0.15, 0.01, 0.01])  # the third call overruns a 0.1 s period
    monkeypatch.setattr(h, "time", clock)
    times, late = h.time_paced(clock.call, 5, hz=10.0, sleep=clock.sleep)
    assert times == pytest.approx([0.01, 0.02, 0.15, 0.01, 0.01])
    assert late == 1
    # a full period before the first call; then the rest of each period; none after the overrun (already late)
    assert clock.sleeps == pytest.approx([0.1, 0.09, 0.08, 0.09])


def test_hz_reports_the_paced_loop_beside_the_hot_one(model_dir, capsys) -> None:
    code, out, err = run_cli(["bench", model_dir, "--device", "cpu", "-n", "5", "--warmup", "1", "--warmup-seconds",
                              "0", "--hz", "500", "--paced-iterations", "4", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    validate_bench(report)  # the paced figures are extra keys: the schema still holds
    assert report["paced"]["hz"] == 500 and report["paced"]["deadline_ms"] == 2.0
    for e in report["subnets"].values():
        p = e["paced"]
        assert p["iterations"] == 4 and p["hot_iterations"] == e["iterations"] and p["hz"] == 500
        assert 0 < p["latency_ms"]["min"] <= p["latency_ms"]["p50"] <= p["latency_ms"]["p99"] <= p["latency_ms"]["max"]
        assert 0 <= p["deadline_misses"] <= 4 and 0 <= p["hot_deadline_misses"] <= e["iterations"]
        assert 0 <= p["over_hot_p99"] <= 4
    on_disk = json.loads((model_dir / "bench-cpu.json").read_text())
    assert on_disk["subnets"]["1111"]["paced"] == report["subnets"]["1111"]["paced"]
    header = (model_dir / "bench-cpu.csv").read_text().splitlines()[0].split(",")
    assert {"paced_p50_ms", "paced_p99_ms", "paced_deadline_misses", "paced_hot_deadline_misses"} <= set(header)
    code, out, err = run_cli(["bench", model_dir, "--device", "cpu", "-n", "5", "--warmup", "1", "--warmup-seconds",
                              "0", "--hz", "500", "--paced-iterations", "4", "--deadline-ms", "50"], capsys)
    assert code == 0, err
    text = out.replace("\n", " ")
    assert "paced p99" in text and "500 Hz" in text and "calls over 50 ms" in text


def test_hz_bad_inputs_exit_2(model_dir, capsys) -> None:
    for args, needle in ((["--hz", "0"], "--hz"), (["--hz", "nan"], "--hz"), (["--hz", "1e6"], "control-loop"),
                         (["--deadline-ms", "5"], "--hz"), (["--hz", "10", "--paced-iterations", "0"],
                                                            "--paced-iterations"),
                         (["--hz", "10", "--deadline-ms", "-1"], "--deadline-ms")):
        code, _, err = run_cli(["bench", model_dir, "--device", "cpu", *args], capsys)
        assert code == 2 and needle in err.replace("\n", " "), (args, err)


def test_cpu_threads_default_to_the_rule_and_are_recorded(model_dir) -> None:
    from adn_edge.bench.threads import default_cpu_threads

    opts = dict(subnets=["0000"], iterations=3, warmup_iters=1, warmup_s=0)
    report = run_bench(model_dir, BenchOptions(**opts), write=False)
    assert report["settings"]["threads"] == default_cpu_threads() == report["device"]["cpu"]["threads"]
    assert "usable CPUs - 1" in report["settings"]["threads_rule"]
    competing = report["device"]["cpu"]["other_load"]  # what else ran while it was timed, the bench excluded
    assert competing["other_cpus"] >= 0 and competing["steal_cpus"] >= 0 and competing["seconds"] >= 0
    assert report["runtime"]["engine"]["threads"] == default_cpu_threads()
    asked = run_bench(model_dir, BenchOptions(threads=2, **opts), write=False)
    assert asked["settings"]["threads"] == 2 and asked["settings"]["threads_rule"] is None
    assert asked["runtime"]["engine"]["threads"] == 2


def test_unstable_timings_are_summarised_once_in_the_report(model_dir) -> None:
    report = run_bench(model_dir, BenchOptions(iterations=5, warmup_iters=1, warmup_s=0, cv_threshold=1e-12),
                       write=False)
    noise = report["noise"]
    assert set(noise["unstable"]) == set(report["subnets"])  # every CV is above a threshold of ~0
    assert noise["text"].startswith("Unstable latency") and all(c in noise["text"] for c in report["subnets"])
    assert "jetson_clocks" not in noise["text"] and "nvidia-smi" not in noise["text"]


def test_an_int8_run_never_gets_fp32_accuracies(model_dir, tmp_path) -> None:
    import shutil

    from adn_edge.bench.harness import accuracy_for

    d = shutil.copytree(model_dir, tmp_path / "acc")
    m = manifest.load(d)
    fp32 = {"schema": 1, "dataset": "digits", "split": "test", "samples": 10,
            "subnets": {c: {"top1": 90.0, "top5": None, "samples": 10} for c in m["subnets"]}}
    (d / "eval.json").write_text(json.dumps(fp32))
    acc, source = accuracy_for(d, m, "fp32", BenchOptions())
    assert acc == {c: 90.0 for c in m["subnets"]} and source["dataset"] == "digits" and source["split"] == "test"
    acc, source = accuracy_for(d, m, "int8", BenchOptions(precision="int8"))
    assert acc is None and "--precision int8" in source["note"]
    int8 = {**fp32, "precision": "int8", "segmented": False,
            "subnets": {c: {"top1": 88.0, "top5": None, "samples": 10} for c in m["subnets"]}}
    (d / "eval-int8.json").write_text(json.dumps(int8))
    acc, source = accuracy_for(d, m, "int8", BenchOptions(precision="int8"))
    assert acc == {c: 88.0 for c in m["subnets"]} and source["file"] == "eval-int8.json"


def test_rounds_are_planned_from_the_iterations_and_the_meter() -> None:
    from adn_edge.bench.harness import BLOCK_CALLS, plan_rounds

    assert plan_rounds(BenchOptions(iterations=100), False, 16) == 100 // BLOCK_CALLS
    assert plan_rounds(BenchOptions(iterations=5), False, 16) == 1
    assert plan_rounds(BenchOptions(iterations=400), True, 16) == 1  # energy: one long window
    assert plan_rounds(BenchOptions(iterations=400, rounds=3), True, 16) == 3
    assert plan_rounds(BenchOptions(iterations=4, rounds=10), False, 16) == 4  # >= 1 call a block
    assert plan_rounds(BenchOptions(iterations=400, rounds=8), False, 1) == 1  # nothing to interleave with


def test_round_orders_shuffle_each_round_reproducibly() -> None:
    from adn_edge.bench.harness import round_orders

    codes = [format(i, "04b") for i in range(16)]
    orders = round_orders(codes, 6, seed=0)
    assert len(orders) == 6 and orders[0] == codes
    assert all(sorted(o) == codes for o in orders)
    assert len({tuple(o) for o in orders}) == 6  # 16! orders: six rounds never repeat one by chance
    assert orders == round_orders(codes, 6, seed=0) and orders != round_orders(codes, 6, seed=1)
    for seed in range(200):  # no round starts with the sub-network that ended the previous one
        two = round_orders(["a", "b"], 8, seed)
        assert all(two[i][0] != two[i - 1][-1] for i in range(1, 8))


def _record_calls(monkeypatch) -> list[str]:
    from adn_edge.runtime import EngineSwitcher

    seen: list[str] = []
    infer = EngineSwitcher.infer

    def recording(self, x, subnet=None):
        seen.append(subnet)
        return infer(self, x, subnet=subnet)

    monkeypatch.setattr(EngineSwitcher, "infer", recording)
    return seen


def test_the_bench_interleaves_sub_networks_in_blocks(model_dir, monkeypatch) -> None:
    seen = _record_calls(monkeypatch)
    report = run_bench(model_dir, BenchOptions(iterations=12, rounds=4, warmup_iters=5, warmup_s=0), write=False)
    codes = list(report["subnets"])
    # Each round: every sub-network once, as one block of 3 timed calls after its warm-up
    # (5 calls in the first round, 2 in the others).
    runs = [(c, sum(1 for _ in g)) for c, g in itertools.groupby(seen)]
    assert [n for _, n in runs] == [5 + 3] * 3 + [2 + 3] * 9
    assert [c for c, _ in runs[:3]] == codes
    assert all(sorted(c for c, _ in runs[i:i + 3]) == sorted(codes) for i in range(0, 12, 3))
    assert all(e["iterations"] == 12 for e in report["subnets"].values())
    assert report["settings"]["rounds_used"] == 4 and "interleaved: 4 rounds of 3 calls" in report["timing"]
    seen.clear()
    one = run_bench(model_dir, BenchOptions(iterations=12, rounds=1, warmup_iters=5, warmup_s=0), write=False)
    assert [sum(1 for _ in g) for _, g in itertools.groupby(seen)] == [17] * 3
    assert "one block" in one["timing"]


def test_rounds_are_checked_and_said(model_dir, capsys) -> None:
    for bad in ("0", "-2"):
        code, _, err = run_cli(["bench", model_dir, "--device", "cpu", "--rounds", bad], capsys)
        assert code == 2 and "--rounds" in err, err
    code, out, err = run_cli(["bench", model_dir, "--device", "cpu", "-n", "20", "--warmup", "1",
                              "--warmup-seconds", "0"], capsys)
    assert code == 0 and "20 calls each, interleaved in 2 rounds" in out.replace("\n", " "), out + err


def test_energy_over_interleaved_blocks_adds_up(model_dir, tegrastats_double) -> None:
    """With a power meter and explicit rounds, a sub-network's energy is the sum over its
    blocks: at the replayed constant power it is still power x timed seconds."""
    opts = BenchOptions(device="cpu", power="tegrastats", subnets=["1111", "0000"], iterations=20, rounds=2,
                        warmup_iters=1, warmup_s=0, idle_s=0.5, interval_ms=20)
    report = run_bench(model_dir, opts, write=False)
    from adn_edge.power.energy import min_run_seconds

    watts = 5.704
    for e in report["subnets"].values():
        assert e["power_w"] == pytest.approx(watts, rel=1e-6)
        assert e["power_run_s"] >= 2 * min_run_seconds(20)  # both blocks, each long enough for the meter
        assert e["power_samples"] >= 2 * 20
        assert e["energy_mj"] == pytest.approx(watts * e["power_run_s"] / e["energy_inferences"] * 1000, rel=1e-3)


def test_device_times_of_interleaved_blocks_are_kept(model_dir, monkeypatch) -> None:
    """GPU backends report CUDA-event times per call; interleaved, each sub-network's are
    gathered over its blocks. A CPU run stands in for the GPU: a wrapped ``infer`` sets
    ``last_device_ms`` as a GPU backend would."""
    from adn_edge.runtime import EngineSwitcher

    infer = EngineSwitcher.infer
    seen: list[tuple[str, int]] = []

    def with_device_time(self, x, subnet=None):
        out = infer(self, x, subnet=subnet)
        seen.append((subnet, len(seen)))
        self.engine.last_device_ms = float(len(seen) - 1)  # the call's index: tells warm-up from timed
        return out

    monkeypatch.setattr(EngineSwitcher, "infer", with_device_time)
    report = run_bench(model_dir, BenchOptions(iterations=6, rounds=3, warmup_iters=2, warmup_s=0), write=False)
    assert len(seen) == 3 * (3 * (2 + 2))  # 3 sub-networks x 3 blocks x (2 warm-up + 2 timed)
    blocks = [list(g) for _, g in itertools.groupby(seen, key=lambda s: s[0])]
    for code, e in report["subnets"].items():
        timed = [i for b in blocks if b[0][0] == code for _, i in b[2:]]  # each block: 2 warm-up calls first
        assert len(timed) == 6
        assert (e["device_ms"]["min"], e["device_ms"]["max"]) == (min(timed), max(timed))
        assert e["device_ms"]["mean"] == pytest.approx(sum(timed) / 6, abs=1e-4)  # rounded to 4 places
        assert e["host_overhead_ms"] == pytest.approx(e["latency_ms"]["p50"] - e["device_ms"]["p50"], abs=1e-3)


def test_one_sub_network_is_timed_in_one_block(model_dir, monkeypatch) -> None:
    seen = _record_calls(monkeypatch)
    report = run_bench(model_dir, BenchOptions(subnets=["0000"], iterations=30, rounds=3, warmup_iters=3, warmup_s=0),
                       write=False)
    assert report["settings"]["rounds_used"] == 1 and "one block" in report["timing"]
    assert len(seen) == 3 + 30  # no re-warm calls between blocks that would follow one another


def test_duration_is_shared_out_over_the_rounds(model_dir) -> None:
    """``--duration`` stays a floor for each sub-network's total timed time when the
    calls are split into rounds (each block gets its share)."""
    report = run_bench(model_dir, BenchOptions(iterations=2, rounds=2, duration_s=0.1, warmup_iters=1, warmup_s=0),
                       write=False)
    for e in report["subnets"].values():
        assert e["iterations"] > 2  # the duration, not the count, decided
        assert e["latency_ms"]["mean"] * e["iterations"] / 1000 >= 0.1
