"""``quantize --segments``: INT8 segment graphs calibrated over every prefix, recorded, run.

The directory is the embedded model (resnet_tiny trained on Fashion-MNIST) exported with
``--segments`` only (tests/quantize/conftest.py); the session fixture quantises it once
on 128 training images of its built-in data (``builtin:fashion``) and evaluates all 16
chains on its 2,000 test images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from adn_edge import subnet
from adn_edge.data import embedded_info
from adn_edge.errors import AdnError
from adn_edge.fileio import sha256_file
from adn_edge.modeldir import manifest
from adn_edge.quantize import qdq
from adn_edge.quantize.segments import Chain, iter_prefix_features
from tests._util import run_cli
from tests.quantize._helpers import (DATA, SEG_DROP_POINTS, SEG_LOGIT_REL_TOLERANCE, SEG_MIN_AGREEMENT, SEG_SAMPLES,
                                     TEST_IMAGES)

ARCH = "resnet_tiny"
KINDS = ("full", "skip")
CODES = subnet.all_codes(4)


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


# ------------------------------------------------------------------ what is written and recorded


def test_manifest_records_every_int8_segment_with_its_sha256(seg_quantized) -> None:
    d, report = seg_quantized
    m = manifest.load(d)  # the extended manifest validates
    seg = m["segments"]
    assert [(f.index, f.kind, f.status, f.cache) for f in report.forms] == \
        [(k, kind, "quantized", "miss") for k in range(4) for kind in KINDS]
    for k, part in enumerate(seg["parts"]):
        for kind in KINDS:
            rec = part["files_int8"][kind]
            assert rec["path"] == f"{ARCH}_seg{k}_{kind}.int8.onnx"
            assert sha256_file(d / rec["path"]) == rec["sha256"] and (d / rec["path"]).stat().st_size == rec["bytes"]
            q = part["quantization"][kind]
            assert q["settings"]["source_sha256"] == part["files"][kind]["sha256"]
            assert q["calibration"]["samples"] == SEG_SAMPLES and q["calibration"]["source"] == DATA
            assert q["calibration"]["prefixes"] == (subnet.all_codes(k) if k else [""])
            assert q["calibration"]["inputs"] == SEG_SAMPLES * 2 ** k
            assert q["cache"]["path"] == f"{ARCH}_seg{k}_{kind}.int8.percentile.ranges.json"
            assert sha256_file(d / q["cache"]["path"]) == q["cache"]["sha256"]
            assert q["qdq"]["quantized_layers"] == q["qdq"]["weighted_layers"] > 0
            meta = _meta(d / rec["path"])
            assert (meta["adn.segment"], meta["adn.kind"], meta["adn.precision"]) == (str(k), kind, "int8")
            assert meta["adn.quant.source_sha256"] == part["files"][kind]["sha256"]
    assert seg["parity_int8"]["rel_err_max"] <= seg["parity_int8"]["tolerance"]
    assert set(seg["subnets"]) == set(CODES)
    assert all(0 < seg["subnets"][c]["rel_err_int8"] < SEG_LOGIT_REL_TOLERANCE for c in CODES)
    acc = seg["quantization"]["accuracy"]
    assert (acc["dataset"], acc["split"], acc["samples"]) == ("fashion", "test", TEST_IMAGES)
    assert set(acc["subnets"]) == set(CODES)
    assert manifest.stale_int8_segments(seg) == []
    # the monolithic graphs were left alone (there are none in this directory)
    assert m["subnets"] == {}


def test_int8_segments_are_valid_qdq_graphs(seg_quantized) -> None:
    d, _ = seg_quantized
    m = manifest.load(d)
    for part in m["segments"]["parts"]:
        for kind in KINDS:
            g = onnx.load(d / part["files_int8"][kind]["path"])
            stats = qdq.check_qdq(g, part["files_int8"][kind]["path"])
            assert not stats.float_layers
            assert [i.name for i in g.graph.input] == [part["input"]]
            assert [o.name for o in g.graph.output] == [part["output"]]
    # the chain's output leaves the last part in float: no 8-bit grid (and no ties) on the logits
    for kind in KINDS:
        g = onnx.load(d / m["segments"]["parts"][3]["files_int8"][kind]["path"])
        (producer,) = [n for n in g.graph.node if "logits" in n.output]
        assert producer.op_type == "Gemm"


def _scale_of(g: onnx.ModelProto, op: str, tensor: str, slot: int) -> float:
    """The scale of the QuantizeLinear reading (slot 0 input) or DequantizeLinear writing ``tensor``."""
    inits = {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
    nodes = [n for n in g.graph.node if n.op_type == op and (n.input[0] if slot == 0 else n.output[0]) == tensor]
    scales = {float(inits[n.input[1]]) for n in nodes}
    assert len(scales) == 1, (tensor, scales)
    return scales.pop()


def test_a_boundary_is_quantised_once(seg_quantized) -> None:
    """Both forms of part k write their output on the grid part k+1 (either form) quantises its
    input to, so the hand-over rounds once, as inside one graph."""
    d, _ = seg_quantized
    parts = manifest.load(d)["segments"]["parts"]
    for k in range(3):
        name = parts[k]["output"]
        written = {_scale_of(onnx.load(d / parts[k]["files_int8"][kind]["path"]), "DequantizeLinear", name, 1)
                   for kind in KINDS}
        read = {_scale_of(onnx.load(d / parts[k + 1]["files_int8"][kind]["path"]), "QuantizeLinear", name, 0)
                for kind in KINDS}
        assert len(written) == 1 and written == read, (k, written, read)
        for kind in KINDS:
            shared = parts[k]["quantization"][kind]["calibration"]["shared_ranges"]
            assert shared["output"]["tensors"][0] == name and shared["output"]["range_of"] == f"seg{k + 1}_full input"


# ------------------------------------------------------------------ calibration covers every prefix


def test_calibration_of_part_k_sees_all_its_prefixes(segmented: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What each form's calibrator is fed is exactly the images run through every one of the
    2^k combinations of the forms of parts 0..k-1 (part 2: 11, 10, 01 and 00), nothing else."""
    from adn_edge.quantize import QuantizeOptions, quantize_segments
    from adn_edge.quantize.calibration import CalibrationData

    d = tmp_path / ARCH
    shutil.copytree(segmented, d)
    fed: dict[str, list[np.ndarray]] = {}
    real_feed = qdq.RangeCalibrator.feed

    def spy(self, input_name, batches, chunk=8):
        fed.setdefault(self.graph_path.name, []).extend(np.array(b) for b in batches)
        return real_feed(self, input_name, batches, chunk)

    monkeypatch.setattr(qdq.RangeCalibrator, "feed", spy)
    samples = 12
    report = quantize_segments(d, DATA, QuantizeOptions(samples=samples, eval_data=None))
    images = CalibrationData.open(DATA, manifest.load(d), samples).array()
    parts = manifest.load(d)["segments"]["parts"]
    for k in range(4):
        expected = list(iter_prefix_features(d, images, k))
        assert [p for p, _ in expected] == (subnet.all_codes(k) if k else [""])
        want = np.concatenate([v for _, v in expected])
        for kind in KINDS:
            got = np.concatenate(fed[f"{ARCH}_seg{k}_{kind}.onnx"])
            assert got.shape == want.shape == (samples * 2 ** k, *parts[k]["input_shape"][1:])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # part 2's data holds each of its 4 prefixes' features, and they differ from one another
    per_prefix = dict(iter_prefix_features(d, images, 2))
    got2 = np.concatenate(fed[f"{ARCH}_seg2_full.onnx"])
    for prefix, v in per_prefix.items():
        assert any(np.allclose(got2[i:i + samples], v, atol=1e-5) for i in range(0, len(got2), samples)), prefix
    assert not np.allclose(per_prefix["11"], per_prefix["00"])
    assert {f.key: len(f.prefixes) for f in report.forms if f.kind == "full"} == \
        {"seg0_full": 1, "seg1_full": 2, "seg2_full": 4, "seg3_full": 8}
    assert "no evaluation data" in " ".join(report.notes)


# ------------------------------------------------------------------ accuracy


def test_every_chain_stays_within_tolerance_of_fp32(seg_quantized) -> None:
    d, report = seg_quantized
    rows = {s.code: s.accuracy for s in report.subnets}
    assert set(rows) == set(CODES)
    drops = {c: a.drop for c, a in rows.items() if a is not None}
    assert len(drops) == 16
    assert max(drops.values()) <= SEG_DROP_POINTS, drops
    assert float(np.mean(list(drops.values()))) <= 0.5, drops  # measured 0.03
    assert min(a.agreement for a in rows.values() if a is not None) >= SEG_MIN_AGREEMENT
    # The super-net still classifies Fashion-MNIST (its FP32 top-1 is in the embedded model's record).
    assert rows["1111"].top1_int8 >= embedded_info()["subnets"]["1111"]["top1"] - SEG_DROP_POINTS
    ev = json.loads((d / "eval-int8-segmented.json").read_text())
    assert (ev["precision"], ev["segmented"], ev["source"], ev["samples"]) == ("int8", True, "onnxruntime-segmented",
                                                                               TEST_IMAGES)
    assert set(ev["subnets"]) == set(CODES)
    assert ev["subnets"]["1111"]["top1"] == round(rows["1111"].top1_int8, 4)
    assert report.eval_files == ["eval-int8-segmented.json"]


def test_segmented_backend_runs_the_int8_segments(seg_quantized) -> None:
    from adn_edge.runtime import EngineSwitcher

    d, _ = seg_quantized
    m = manifest.load(d)
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32), dtype=np.float32)
    want = Chain(d, m["segments"]["parts"], "files_int8", None, 8, False).logits(x)
    with EngineSwitcher.open(d, segmented=True, precision="int8", subnets="all", threads=1) as sw:
        info = sw.describe()["engine"]
        assert (info["precision"], info["prepack"], info["segments"]) == ("int8", True, 8)
        for code in ("1111", "0110", "0000"):
            sw.switch(code)
            np.testing.assert_allclose(np.asarray(sw.infer(x)), want[code], rtol=1e-5, atol=1e-5)
    with EngineSwitcher.open(d, segmented=True, precision="int8", subnets=["1010"], prepack=False, threads=1) as sw:
        assert sw.describe()["engine"]["prepack"] is False
        np.testing.assert_allclose(np.asarray(sw.infer(x, "1010")), want["1010"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ up to date, caches, staleness, integrity


def test_rerun_keeps_and_a_changed_graph_redoes_what_depends_on_it(seg_workdir: Path) -> None:
    from adn_edge.quantize import QuantizeOptions, quantize_segments

    d = seg_workdir
    again = quantize_segments(d, DATA, QuantizeOptions(samples=SEG_SAMPLES))
    assert {f.status for f in again.forms} == {"up to date"}
    assert all(s.accuracy is not None for s in again.subnets)  # from the record: nothing changed
    forced = quantize_segments(d, DATA, QuantizeOptions(samples=SEG_SAMPLES, force=True, eval_data=None))
    assert {(f.status, f.cache) for f in forced.forms} == {("quantized", "hit")}
    # part 1's full graph changes (same computation, other bytes): its ranges, and the ranges of
    # every later part (their features come through it), are stale; part 1's skip form is redone
    # from its cached ranges (its output is quantised on part 2's input range, which changed);
    # part 0 is kept (part 1's input range is a function of part 0 and the images only)
    m = manifest.load(d)
    rec = m["segments"]["parts"][1]["files"]["full"]
    g = onnx.load(d / rec["path"])
    g.doc_string = "re-exported"
    onnx.save(g, d / rec["path"])
    m["segments"]["parts"][1]["files"]["full"] = manifest.file_record(d, rec["path"])
    manifest.save(d, m)
    redo = quantize_segments(d, DATA, QuantizeOptions(samples=SEG_SAMPLES, eval_data=None))
    assert {f.key: f.cache for f in redo.forms} == {
        "seg0_full": "-", "seg0_skip": "-", "seg1_full": "miss", "seg1_skip": "hit",
        "seg2_full": "miss", "seg2_skip": "miss", "seg3_full": "miss", "seg3_skip": "miss"}
    assert [f.key for f in redo.forms if f.status == "up to date"] == ["seg0_full", "seg0_skip"]


def test_tampered_int8_segment_is_refused_and_redone(seg_workdir: Path) -> None:
    from adn_edge.quantize import QuantizeOptions, quantize_segments
    from adn_edge.runtime import EngineSwitcher

    d = seg_workdir
    m = manifest.load(d)
    path = d / m["segments"]["parts"][2]["files_int8"]["skip"]["path"]
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(AdnError, match="sha256"):
        EngineSwitcher.open(d, segmented=True, precision="int8", subnets=["1101"])
    report = quantize_segments(d, DATA, QuantizeOptions(samples=SEG_SAMPLES, eval_data=None))
    assert [f.key for f in report.forms if f.status == "quantized"] == ["seg2_skip"]
    assert sha256_file(path) == manifest.load(d)["segments"]["parts"][2]["files_int8"]["skip"]["sha256"]


def test_int8_segments_of_other_float32_graphs_are_refused(seg_workdir: Path) -> None:
    """A re-export keeps an earlier files_int8 record; if the float32 graph changed since,
    the INT8 graph is of other weights and must not run."""
    from adn_edge.runtime import EngineSwitcher

    d = seg_workdir
    m = manifest.load(d)
    m["segments"]["parts"][0]["quantization"]["full"]["settings"]["source_sha256"] = "0" * 64
    manifest.save(d, m)
    assert manifest.stale_int8_segments(m["segments"]) == ["seg0_full"]
    with pytest.raises(AdnError, match="seg0_full were quantised from other float32") as e:
        EngineSwitcher.open(d, segmented=True, precision="int8")
    assert "quantize DIR --segments" in (e.value.hint or "")
    with EngineSwitcher.open(d, segmented=True, subnets=["1111"]) as sw:  # fp32 still runs
        assert sw.describe()["engine"]["precision"] == "fp32"


def test_manifest_schema_guards_files_int8(seg_workdir: Path) -> None:
    d = seg_workdir
    m = manifest.load(d)
    half = json.loads(json.dumps(m))
    del half["segments"]["parts"][1]["files_int8"]["skip"]
    with pytest.raises(AdnError, match=r"segments.parts\[1\].files_int8 lacks the field\(s\) 'skip'"):
        manifest.validate(half)
    outside = json.loads(json.dumps(m))
    outside["segments"]["parts"][3]["files_int8"]["full"]["path"] = "../outside/evil.onnx"
    with pytest.raises(AdnError, match=r"segments.parts\[3\].files_int8.full.path"):
        manifest.validate(outside)


# ------------------------------------------------------------------ refusals and the command line


def test_directory_without_segments_is_refused(fp32dir: Path, capsys) -> None:
    from adn_edge.quantize import quantize_segments

    with pytest.raises(AdnError, match="no segment graphs to quantize") as e:
        quantize_segments(fp32dir, "builtin")
    assert "--segments" in (e.value.hint or "")
    rc, _, err = run_cli(["quantize", fp32dir, "--calib", "builtin", "--segments"], capsys)
    assert rc == 2 and "Traceback" not in err
    assert "no segment graphs to quantize" in err.replace("\n", " ")
    assert not list(fp32dir.glob("*.int8.onnx"))


def test_cli_refusals_exit_2(seg_workdir: Path, tmp_path: Path, capsys) -> None:
    for args, needle in ((["-s", "1010"], "--subnet does not apply"), (["--samples", "5"], "too few"),
                         (["--method", "kl"], "Unknown calibration method")):
        rc, _, err = run_cli(["quantize", seg_workdir, "--calib", "builtin", "--segments", *args], capsys)
        assert rc == 2 and needle in err.replace("\n", " "), (args, err)
    rc, _, err = run_cli(["quantize", tmp_path / "nowhere", "--calib", "builtin", "--segments"], capsys)
    assert rc == 2 and "does not exist" in err.replace("\n", " ")


def test_cli_segments_json_and_table(seg_workdir: Path, capsys) -> None:
    rc, out, err = run_cli(["quantize", seg_workdir, "--calib", DATA, "--samples", str(SEG_SAMPLES),
                            "--segments", "--json"], capsys)
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["segments"] is True and len(rec["parts"]) == 8 and len(rec["subnets"]) == 16
    assert {p["status"] for p in rec["parts"]} == {"up to date"}
    assert all(s["accuracy"]["drop"] <= SEG_DROP_POINTS for s in rec["subnets"])
    rc, out, err = run_cli(["quantize", seg_workdir, "--calib", DATA, "--samples", str(SEG_SAMPLES),
                            "--segments"], capsys)
    assert rc == 0, err
    assert "INT8 segments" in out and "every prefix" in out and "0101" in out and "int8 top-1" in out


def test_corrected_segments_are_refused_until_supported(segmented: Path) -> None:
    """Segments with per-sub-network corrections (`export --segments --recalibrate`) take
    correction vectors as inputs, which the prefix calibration does not feed."""
    from adn_edge.quantize.segments import _segments

    m = manifest.load(segmented)
    assert _segments(m) is m["segments"]
    corrected = {**m, "segments": {**m["segments"], "corrections": {"reference": "checkpoint"}}}
    with pytest.raises(AdnError, match="BatchNorm corrections") as e:
        _segments(corrected)
    assert "without --segments" in (e.value.hint or "")
