"""The tegrastats sampler driven by a test double of ``tegrastats`` put first on PATH.

No Jetson is involved: the double replays recorded fixture lines, so every number
here is a replay, never a measurement.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from adn_edge.errors import AdnError
from adn_edge.power import PowerSourceError, per_inference, power_source, resolve_power, window_power
from adn_edge.power.tegrastats import TegrastatsSource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tegrastats"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"tegrastats fixtures not found at {FIXTURES}")

FAKE_TEGRASTATS = '''#!{python}
"""TEST DOUBLE of NVIDIA's `tegrastats` (not the real tool; no hardware is read).

Prints recorded tegrastats lines at the requested `--interval MS`, cycling through
the file named by $FAKE_TEGRASTATS_LINES (re-read every line, so a test can switch
the "load" by replacing it). Knobs: $FAKE_TEGRASTATS_EXIT_AFTER=N exits with code 3
after N lines (0: before any); $FAKE_TEGRASTATS_IGNORE_TERM=1 ignores SIGTERM;
$FAKE_TEGRASTATS_ARGV=path records the command line it was given.
"""
import os, signal, sys, time

args = sys.argv[1:]
if os.environ.get("FAKE_TEGRASTATS_ARGV"):
    with open(os.environ["FAKE_TEGRASTATS_ARGV"], "w") as f:
        f.write(" ".join(args))
if os.environ.get("FAKE_TEGRASTATS_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
interval = int(args[args.index("--interval") + 1]) / 1000 if "--interval" in args else 1.0
exit_after = int(os.environ.get("FAKE_TEGRASTATS_EXIT_AFTER", "-1"))
n = 0
due = time.monotonic()
while True:
    if n == exit_after:
        print("fake tegrastats: lost the power monitor", file=sys.stderr, flush=True)
        sys.exit(3)
    due += interval
    time.sleep(max(0.0, due - time.monotonic()))
    with open(os.environ["FAKE_TEGRASTATS_LINES"]) as f:
        lines = [ln.rstrip("\\n") for ln in f if ln.strip()]
    print(lines[n % len(lines)], flush=True)
    n += 1
'''


def fixture(name: str) -> list[str]:
    return [ln for ln in (FIXTURES / name).read_text().splitlines() if ln.strip()]


def write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # atomic: the double never reads half a file


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Install the double as `tegrastats` first on PATH; returns the lines file to fill."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "tegrastats"
    exe.write_text(FAKE_TEGRASTATS.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    lines = tmp_path / "lines.txt"
    write_lines(lines, fixture("orin_nano_jp6.txt"))
    monkeypatch.setenv("FAKE_TEGRASTATS_LINES", str(lines))
    monkeypatch.setenv("FAKE_TEGRASTATS_ARGV", str(tmp_path / "argv.txt"))
    return lines


def gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_collect_stop(fake, tmp_path):
    src = TegrastatsSource(interval_ms=20)
    with src:
        pid = src.pid
        assert not gone(pid)
        time.sleep(0.6)
        assert src.running
    assert gone(pid), "tegrastats must not outlive stop()"
    assert (tmp_path / "argv.txt").read_text().split() == ["--interval", "20"]
    samples = src.samples
    assert len(samples) >= 15
    assert all(b.t > a.t for a, b in zip(samples, samples[1:]))  # stamped on arrival, in order
    assert {round(s.module_w, 3) for s in samples} == {5.704, 4.744}
    assert {round(s.cpu_gpu_w, 3) for s in samples} == {0.831, 1.273}
    d = src.describe()
    assert d["source"] == "tegrastats" and d["rail"] == "VDD_IN" and d["cpu_gpu_rail"] == "VDD_CPU_GPU_CV"
    assert d["module_summed"] is False and d["parse_failures"] == 0
    assert 10 <= d["observed_interval_ms"] <= 60


def test_energy_from_the_double_matches_a_hand_computation(fake):
    # Idle: only the 4.744 W line; run: only the 5.704 W line (VDD_IN instantaneous values).
    idle_line, run_line = fixture("orin_nano_jp6.txt")[1], fixture("orin_nano_jp6.txt")[0]
    write_lines(fake, [idle_line])
    with TegrastatsSource(interval_ms=20) as src:
        i0 = src.now()
        time.sleep(0.5)
        i1 = src.now()
        idle = src.window(i0, i1)
        write_lines(fake, [run_line])
        time.sleep(0.2)  # let the switch reach the window's left neighbour
        r0 = src.now()
        time.sleep(0.6)
        r1 = src.now()
        run = src.window(r0, r1)
    n = 120  # pretend 120 inferences ran in the window
    e = per_inference(run, n, idle.mean_w)
    t_run = r1 - r0
    hand_total_mj = 5.704 * t_run / n * 1000
    hand_above_mj = (5.704 - 4.744) * t_run / n * 1000
    assert idle.mean_w == pytest.approx(4.744, rel=0.01)
    assert run.mean_w == pytest.approx(5.704, rel=0.01)
    assert e.energy_mj == pytest.approx(hand_total_mj, rel=0.01)
    assert e.energy_above_idle_mj == pytest.approx(hand_above_mj, rel=0.01)
    assert run.samples >= 20 and run.extrapolated_s == 0.0


def test_alternating_lines_integrate_to_their_mean(fake):
    with TegrastatsSource(interval_ms=20) as src:
        time.sleep(0.1)
        t0 = src.now()
        time.sleep(0.8)
        t1 = src.now()
        src.wait_until(t1)
        w = window_power(src.samples, t0, t1)
    # Every trapezoid joins a 5.704 W and a 4.744 W reading: hand mean = (5.704 + 4.744) / 2.
    assert w.mean_w == pytest.approx((5.704 + 4.744) / 2, rel=0.01)


def test_exit_during_the_run_is_a_clear_error_and_leaves_no_process(fake, monkeypatch):
    monkeypatch.setenv("FAKE_TEGRASTATS_EXIT_AFTER", "5")
    src = TegrastatsSource(interval_ms=20)
    with pytest.raises(PowerSourceError) as info:
        with src:
            time.sleep(0.5)
    msg = str(info.value)
    assert "exited while the benchmark was running" in msg and "exit code 3" in msg
    assert "lost the power monitor" in msg  # its stderr is shown
    assert info.value.exit_code == 1
    assert gone(src.pid)


def test_check_reports_an_early_exit(fake, monkeypatch):
    monkeypatch.setenv("FAKE_TEGRASTATS_EXIT_AFTER", "3")
    src = TegrastatsSource(interval_ms=20)
    src.start()
    time.sleep(0.4)
    with pytest.raises(PowerSourceError, match="exit code 3"):
        src.check()
    src.stop()  # already reported and cleaned up: a no-op
    assert gone(src.pid)


def test_exit_before_the_first_line(fake, monkeypatch):
    monkeypatch.setenv("FAKE_TEGRASTATS_EXIT_AFTER", "0")
    src = TegrastatsSource(interval_ms=20)
    with pytest.raises(PowerSourceError, match="before printing a reading"):
        src.start()
    assert gone(src.pid)


def test_missing_tegrastats_is_an_adn_error_with_install_hint(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(AdnError) as info:
        power_source("tegrastats")
    assert not isinstance(info.value, PowerSourceError)
    assert info.value.exit_code == 2
    text = str(info.value)
    assert "nvidia-l4t-tools" in text and "/usr/bin/tegrastats" in text and "sudo" in text


def test_ctrl_c_inside_the_block_stops_the_process(fake):
    src = TegrastatsSource(interval_ms=20)
    with pytest.raises(KeyboardInterrupt):
        with src:
            time.sleep(0.1)
            raise KeyboardInterrupt
    assert gone(src.pid)


def test_exception_inside_the_block_stops_the_process(fake):
    src = TegrastatsSource(interval_ms=20)
    with pytest.raises(RuntimeError, match="boom"):
        with src:
            raise RuntimeError("boom")
    assert gone(src.pid)


def test_a_process_that_ignores_sigterm_is_killed(fake, monkeypatch):
    monkeypatch.setenv("FAKE_TEGRASTATS_IGNORE_TERM", "1")
    src = TegrastatsSource(interval_ms=20, term_timeout_s=0.3)
    src.start()
    pid = src.pid
    t = time.perf_counter()
    src.stop()
    assert time.perf_counter() - t < 3.0
    assert gone(pid)


def test_lines_without_power_rails_are_refused(fake):
    write_lines(fake, ["RAM 2461/7620MB (lfb 3x2MB) CPU [19%@729,14%@729]"])
    src = TegrastatsSource(interval_ms=20)
    with pytest.raises(PowerSourceError, match="no power rails"):
        src.start()
    assert gone(src.pid)


def test_garbage_lines_are_counted_not_fatal(fake):
    write_lines(fake, ["garbage !!", fixture("tx2_jp4.txt")[0], "more garbage"])
    with TegrastatsSource(interval_ms=20) as src:
        time.sleep(0.4)
    assert src.failure_count >= 2 and src.failures[0].line == "garbage !!"
    assert src.samples and all(s.module_w == pytest.approx(3.631) for s in src.samples)
    assert src.describe()["cpu_gpu_rail"] == "VDD_CPU+VDD_GPU"


def test_agx_orin_summed_module_power_is_described(fake):
    write_lines(fake, fixture("agx_orin_jp5.txt"))
    with power_source("tegrastats", interval_ms=20) as src:
        time.sleep(0.2)
    d = src.describe()
    assert d["module_summed"] is True and "sum of" in " ".join(d["notes"])
    assert src.samples[0].module_w == pytest.approx(10.592)


def test_explicit_power_choice_overrides_the_device(fake):
    name = resolve_power("tegrastats", "cpu")
    assert name == "tegrastats"
    with power_source(name, interval_ms=20) as src:
        time.sleep(0.1)
    assert src.samples


def test_stop_is_idempotent_and_restart_works(fake):
    src = TegrastatsSource(interval_ms=20)
    src.start()
    first = src.pid
    src.stop()
    src.stop()
    assert gone(first)
    src.start()
    assert src.pid != first or gone(first)
    src.stop()
    assert gone(src.pid)


CHILD = '''
import sys, time
from adn_edge.power.tegrastats import TegrastatsSource
src = TegrastatsSource(interval_ms=20)
mode = sys.argv[1]
if mode == "forget":
    src.start()  # never stopped: the interpreter's exit must still reap tegrastats
    print(src.pid, flush=True)
    sys.exit(0)
with src:
    print(src.pid, flush=True)
    time.sleep(60)
'''


def _child(mode, tmp_path):
    import subprocess

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, env=env)


def test_real_sigint_to_the_owner_stops_tegrastats(fake, tmp_path):
    import signal

    child = _child("with", tmp_path)
    try:
        pid = int(child.stdout.readline())
        assert not gone(pid)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)  # an upper bound, not a timing: a loaded CI box once took > 10 s
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    deadline = time.monotonic() + 30
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)


def test_interpreter_exit_without_stop_reaps_tegrastats(fake, tmp_path):
    child = _child("forget", tmp_path)
    pid = int(child.stdout.readline())
    child.wait(timeout=60)
    assert child.returncode == 0
    deadline = time.monotonic() + 30
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)
