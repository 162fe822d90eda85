"""The tegrastats sampler against a hostile ``tegrastats``: endless lines, absurd values.

A real subprocess (a test double of the tool, first on PATH) prints the output; the
sampler runs in a child interpreter so that its peak memory is its own and can be
read back (``VmHWM``), and an unbounded read dies on an address-space limit
instead of taking the host down.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from tests._util import FIXTURES, REPO

HOSTILE = '''#!{python}
"""TEST DOUBLE of `tegrastats` that misbehaves on purpose (no hardware is read).

$HOSTILE_SCRIPT is a JSON list of steps: ["line", TEXT, COUNT] prints TEXT COUNT times
at the requested --interval; ["endless", MBYTES] writes MBYTES of 'x' with no newline
(MBYTES < 0: forever), then ends the line.
"""
import json, os, sys, time

args = sys.argv[1:]
interval = int(args[args.index("--interval") + 1]) / 1000 if "--interval" in args else 1.0
out = sys.stdout.buffer
block = b"x" * (1 << 20)
for step in json.loads(os.environ["HOSTILE_SCRIPT"]):
    if step[0] == "line":
        for _ in range(step[2]):
            out.write(step[1].encode() + b"\\n")
            out.flush()
            time.sleep(interval)
    else:
        n = 0
        while step[1] < 0 or n < step[1]:
            out.write(block)
            n += 1
        out.write(b"\\n")
        out.flush()
while True:  # then idle like a tool waiting for its next reading
    time.sleep(1)
'''

CHILD = '''
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from adn_edge.errors import PowerSourceError
from adn_edge.power.tegrastats import TegrastatsSource
src = TegrastatsSource(interval_ms=10, first_line_timeout_s=30)
error = None
try:
    src.start()
    time.sleep(float(sys.argv[1]))
    src.stop()
except PowerSourceError as exc:
    error = str(exc)
    src.stop()
except MemoryError:
    error = "MemoryError"
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (pytest, torch loaded)
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "samples": [s.module_w for s in src.samples], "describe": src.describe(),
                  "peak_rss_mb": peak_kb / 1024}), flush=True)
'''

GOOD = [ln for ln in (FIXTURES / "tegrastats" / "orin_nano_jp6.txt").read_text().splitlines() if ln.strip()][0]
ABSURD = GOOD.replace("VDD_IN 5704mW/5704mW", "VDD_IN 1000000000mW/5704mW")
HOT = GOOD.replace("tj@48.843C", "tj@5000C")


@pytest.fixture
def hostile(tmp_path):
    """Run the sampler in a child against the double following ``script``; returns its report."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "tegrastats"
    exe.write_text(HOSTILE.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)

    def run(script: list, seconds: float) -> dict:
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "HOSTILE_SCRIPT": json.dumps(script), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(seconds)], capture_output=True, text=True,
                              timeout=300, cwd=REPO, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run


def test_fixture_lines_are_what_the_tests_think():
    assert "VDD_IN 5704mW/5704mW" in GOOD and "tj@48.843C" in GOOD
    assert ABSURD != GOOD and HOT != GOOD


def test_a_200_mb_line_is_discarded_and_counted_without_growing_memory(hostile):
    r = hostile([["line", GOOD, 20], ["endless", 200], ["line", GOOD, 30]], seconds=3.0)
    assert r["peak_rss_mb"] < 150, r["peak_rss_mb"]  # a line held whole would be >= 200 MB (400 as str)
    d = r["describe"]
    assert r["error"] is None
    assert d["overlong_lines"] == 1 and d["rejected_samples"] == 1
    assert len(r["samples"]) >= 40 and set(r["samples"]) == {5.704}  # readings on both sides of it


def test_a_line_that_never_ends_keeps_memory_bounded_and_stops(hostile):
    r = hostile([["line", GOOD, 5], ["endless", -1]], seconds=2.0)
    assert r["peak_rss_mb"] < 150, r["peak_rss_mb"]
    d = r["describe"]
    assert r["error"] is None, r["error"]
    assert d["overlong_lines"] == 1 and r["samples"] and set(r["samples"]) == {5.704}
    from adn_edge.power.tegrastats import MAX_LINE_BYTES

    assert d["discarded_bytes"] > 100 * MAX_LINE_BYTES  # it really kept writing meanwhile


def test_absurd_power_is_dropped_and_counted(hostile):
    r = hostile([["line", GOOD, 30], ["line", ABSURD, 1], ["line", GOOD, 30]], seconds=1.5)
    assert r["error"] is None
    assert set(r["samples"]) == {5.704}  # the 1 MW reading never reached a sample
    d = r["describe"]
    assert d["rejected_samples"] == 1 and "VDD_IN" in d["rejections"][0]


def test_an_impossible_temperature_rejects_the_reading(hostile):
    r = hostile([["line", GOOD, 30], ["line", HOT, 1], ["line", GOOD, 30]], seconds=1.5)
    assert r["error"] is None and r["describe"]["rejected_samples"] == 1
    assert "5000" in r["describe"]["rejections"][0]


def test_a_meter_printing_mostly_absurd_values_fails_the_run(hostile):
    r = hostile([["line", GOOD, 5], ["line", ABSURD, 40]], seconds=1.5)
    assert r["error"] is not None and "implausible" in r["error"], r["error"]
    m = re.search(r"(\d+) implausible or over-long readings out of (\d+)", r["error"])  # the counts are named
    assert m, r["error"]
    rejected, total = int(m.group(1)), int(m.group(2))
    assert rejected == r["describe"]["rejected_samples"] and total == rejected + len(r["samples"])
    assert rejected >= 3 and len(r["samples"]) == 5 and all(w < 1000 for w in r["samples"])


def test_a_meter_printing_only_absurd_values_fails_at_start(hostile):
    r = hostile([["line", ABSURD, 50]], seconds=0.5)
    assert r["error"] is not None and "implausible" in r["error"] and "1000000000" in r["error"]
    assert r["samples"] == []


def test_the_error_is_a_power_source_failure_exit_1():
    from adn_edge.errors import PowerSourceError
    from adn_edge.power.base import rejection_error

    err = rejection_error("tegrastats", rejected=12, accepted=8, examples=["VDD_IN 1000000000 mW"])
    assert isinstance(err, PowerSourceError) and err.exit_code == 1
    assert "12" in str(err) and "20" in str(err) and "VDD_IN" in str(err)

