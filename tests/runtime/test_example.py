"""examples/robot_loop.py runs end to end and shows the governor at work."""

from __future__ import annotations

import re
import subprocess
import sys

from tests._util import REPO


def test_robot_loop_example(model_dir):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "robot_loop.py"), str(model_dir),
                           "--hz", "0", "--ticks", "60", "--threads", "1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if re.match(r"\s*\d+\s+[\d.]+ms", line)]
    assert len(rows) == 60
    assert {r[2] for r in rows} <= {"1111", "0111", "1011", "1101", "1110", "0011", "0101", "0110", "1001",
                                    "1010", "1100", "0001", "0010", "0100", "1000", "0000"}
    assert "ticks missed their deadline" in proc.stdout


def test_robot_loop_reports_bad_directory(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "robot_loop.py"), str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
