"""Core file I/O: strict JSON both ways, regular files only, bounded reads, no stale temps.

Each test drives the real filesystem (FIFOs, /dev/zero, a writer killed with
SIGKILL in another process), because those are the cases that hung or leaked.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adn_edge import fileio
from adn_edge.errors import AdnError, AdnFailure
from tests._util import REPO

# -- strict JSON ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_write_json_refuses_non_finite_numbers_naming_the_key(tmp_path, bad):
    dest = tmp_path / "bench-cpu.json"
    report = {"subnets": {"1111": {"latency_ms": {"p50": 1.0, "p99": bad}}}, "runs": [1.0, 2.0]}
    with pytest.raises(AdnFailure) as info:
        fileio.write_json(dest, report)
    assert not isinstance(info.value, AdnError) and info.value.exit_code == 1
    assert "subnets.1111.latency_ms.p99" in str(info.value)
    assert not dest.exists() and not list(tmp_path.iterdir())  # nothing half-written, no temp left


def test_write_json_names_list_positions(tmp_path):
    with pytest.raises(AdnFailure, match=r"runs\[2\]"):
        fileio.write_json(tmp_path / "x.json", {"runs": [1.0, 2.0, math.nan]})


def test_to_json_is_valid_strict_json():
    text = fileio.to_json({"a": [1, 2.5, None, "x"]})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"a": [1, 2.5, None, "x"]}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_read_json_refuses_nan_and_infinity_literals(tmp_path, literal):
    p = tmp_path / "manifest.json"
    p.write_text('{"latency": {"p50": ' + literal + "}}")
    with pytest.raises(AdnError, match=literal):
        fileio.read_json(p, "manifest")


def test_read_json_refuses_an_oversized_file(tmp_path):
    p = tmp_path / "bench-cpu.json"
    with open(p, "wb") as f:  # sparse: costs no disk, only its size matters
        f.truncate(fileio.MAX_JSON_BYTES + 1)
    with pytest.raises(AdnError, match="larger than"):
        fileio.read_json(p, "benchmark report")


# -- regular files only -------------------------------------------------------------------

def _unblock_later(fifo: Path, delay: float = 3.0) -> threading.Thread:
    """Open the FIFO for writing after ``delay`` so that a reader blocked in open()
    returns (with empty input) instead of hanging the test run forever."""
    def opener() -> None:
        time.sleep(delay)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass  # nobody reading: the code under test did not block

    th = threading.Thread(target=opener, daemon=True)
    th.start()
    return th


def test_read_json_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo)
    guard = _unblock_later(fifo)
    with pytest.raises(AdnError, match="not a regular file"):
        fileio.read_json(fifo, "manifest")
    guard.join()


def test_sha256_and_read_bytes_refuse_a_fifo(tmp_path):
    fifo = tmp_path / "graph.onnx"
    os.mkfifo(fifo)
    guard = _unblock_later(fifo)
    with pytest.raises(AdnError, match="not a regular file"):
        fileio.sha256_file(fifo)
    with pytest.raises(AdnError, match="not a regular file"):
        fileio.read_bytes(fifo, "graph")
    guard.join()


def test_missing_files_keep_their_errors(tmp_path):
    with pytest.raises(AdnError, match="does not exist"):
        fileio.read_json(tmp_path / "none.json")
    with pytest.raises(FileNotFoundError):  # callers (manifest verification) catch OSError
        fileio.sha256_file(tmp_path / "none.onnx")


DEV_ZERO = '''
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))  # an unbounded read dies here, not the host
from adn_edge import fileio
from adn_edge.errors import AdnError
for reader in (lambda: fileio.read_json("/dev/zero", "manifest"),
               lambda: fileio.sha256_file("/dev/zero"),
               lambda: fileio.read_bytes("/dev/zero", "graph")):
    try:
        reader()
    except AdnError as exc:
        print("refused:", exc, flush=True)
    else:
        print("read it", flush=True)
'''


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused_instead_of_read_forever():
    proc = subprocess.run([sys.executable, "-c", DEV_ZERO], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(lines) == 3 and all(ln.startswith("refused:") and "not a regular file" in ln for ln in lines), lines


def test_read_bytes_is_bounded(tmp_path):
    p = tmp_path / "blob"
    p.write_bytes(b"x" * 100)
    assert fileio.read_bytes(p, "blob") == b"x" * 100
    with pytest.raises(AdnError, match="larger than"):
        fileio.read_bytes(p, "blob", max_bytes=99)


# -- stale temporary files -----------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_names_carry_the_writer_pid(tmp_path):
    seen = []
    with fileio.atomic_path(tmp_path / "manifest.json") as tmp:
        seen.append(tmp.name)
        tmp.write_text("{}")
    assert f"-{os.getpid()}." in seen[0] and seen[0].startswith(".manifest.json.") and seen[0].endswith(".tmp")


def test_the_next_write_removes_stale_temps_and_keeps_live_ones(tmp_path):
    host = fileio.temp_host_tag()
    dead = tmp_path / f".manifest.json.{host}-{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".bench-cpu.json.{host}-{os.getpid()}.efgh5678.tmp"  # a write in progress, here
    old_legacy = tmp_path / ".eval.json.k2j4h5g6.tmp"                        # before PIDs were in the name
    young_legacy = tmp_path / ".eval.json.a1b2c3d4.tmp"
    other_host = tmp_path / ".eval.json.ffffff-1.a1b2c3d5.tmp"             # PID 1 there is not ours to judge
    unrelated = tmp_path / ".notes.tmp"
    for p in (dead, live, old_legacy, young_legacy, other_host, unrelated):
        p.write_text("partial")
    hour_ago = time.time() - 2 * fileio.STALE_TEMP_AGE_S
    os.utime(old_legacy, (hour_ago, hour_ago))
    os.utime(unrelated, (hour_ago, hour_ago))
    fileio.write_json(tmp_path / "manifest.json", {"ok": True})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["manifest.json", live.name, young_legacy.name, other_host.name, unrelated.name])


KILLED_WRITER = '''
import sys, time
from adn_edge import fileio
with fileio.atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half of a manifest")
    print(tmp, flush=True)
    time.sleep(600)
'''


def test_a_writer_killed_mid_write_leaves_a_temp_the_next_writer_removes(tmp_path):
    dest = tmp_path / "manifest.json"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(dest)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert tmp.exists() and not dest.exists()  # what kill -9 leaves behind
    fileio.write_json(dest, {"ok": True})
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


# -- thread counts ---------------------------------------------------------------------------

def test_thread_counts_are_bounded_by_the_machine():
    cpus = os.cpu_count() or 1
    assert fileio.check_threads(None) is None
    assert fileio.check_threads(1) == 1 and fileio.check_threads(cpus) == cpus
    for bad in (0, -1, cpus * fileio.THREADS_PER_CPU + 1, 100000):
        with pytest.raises(AdnError, match="--threads"):
            fileio.check_threads(bad)
    with pytest.raises(AdnError, match="threads"):
        fileio.check_threads(True, "threads")
    with pytest.raises(AdnError, match="threads"):
        fileio.check_threads(2.5, "threads")
    assert fileio.check_threads(0, "threads", allow_zero=True) == 0
