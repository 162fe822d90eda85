"""``adn-edge demo`` end to end (reduced timing settings; the pipeline is the real one)."""

from __future__ import annotations

import json

from adn_edge.modeldir import manifest
from adn_edge.modeldir.results import validate_bench
from tests._util import run_cli


def test_demo_exports_verifies_evaluates_benches_switches_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--out", out, "--iterations", "10", "--recal-samples", "256",
                                 "--threads", "1", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    data = manifest.load(out)
    assert len(data["subnets"]) == 16 and data["recalibration"]["data"] == "builtin"
    assert all(e["parity"]["onnx"]["rel_err"] <= 1e-4 for e in data["subnets"].values())
    # The recommended recipe keeps every sub-network of the embedded model accurate.
    top1 = {c: s["top1"] for c, s in summary["subnets"].items()}
    assert len(top1) == 16 and min(top1.values()) >= 95.0, top1
    validate_bench(json.loads((out / "bench-cpu.json").read_text()))
    assert (out / "eval.json").exists() and (out / "pareto.png").stat().st_size > 10_000
    assert summary["switches"] and all(s["subnet"] in top1 for s in summary["switches"])
    assert set(summary["pareto"]) <= set(top1) and summary["pareto"]
