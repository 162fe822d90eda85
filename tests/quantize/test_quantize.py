"""INT8 Q/DQ export: graph validity, closeness to FP32, records, cache, runtime and build hooks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from adn_edge.modeldir import manifest
from adn_edge.fileio import sha256_file
from adn_edge.quantize import qdq
from adn_edge.quantize.accuracy import EVAL_INT8_FILENAME, logits, rel_err, session
from tests.quantize._helpers import DATA, QUANTIZED, SAMPLES, TEST_IMAGES

LOGIT_REL_TOLERANCE = 0.07
"""||int8 - fp32|| / ||fp32|| over the model's test split (2,000 Fashion-MNIST images).
Percentile ranges on 128 images give 0.024 (1111) and 0.034 (0000); 0.07 leaves room for
other CPUs' integer kernels (VNNI or not) without letting a broken scale through (measured:
one weight scale doubled, or every activation range 4x too wide or too narrow: 0.30-0.97)."""
MIN_AGREEMENT = 97.0
"""Percent of test images on which INT8 and FP32 predict the same class (measured 99.05 (0000)
and 99.4 (1111) on the 2,000 test images)."""
MAX_DROP_POINTS = 1.0
"""Issue 6's floor for the top-1 drop (20 of the 2,000 test images; measured: 0.30 (1111),
-0.30 (0000))."""


def _test_split(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The embedded model's own test split (builtin:fashion), preprocessed for ``directory``."""
    from adn_edge.data import EMBEDDED_DATASET
    from adn_edge.train.data import load_builtin
    from adn_edge.train.evaluate import preprocess_for_directory

    ds = load_builtin(EMBEDDED_DATASET, "test", preprocess_for_directory(directory))
    return ds.images.numpy(), ds.labels.numpy()


# ------------------------------------------------------------------ the graph


@pytest.mark.parametrize("code", QUANTIZED)
def test_int8_graph_is_a_valid_symmetric_qdq_graph(quantized, code: str) -> None:
    d, _ = quantized
    m = onnx.load(str(d / f"resnet_tiny_{code}.int8.onnx"))
    onnx.checker.check_model(m, full_check=True)
    counts = qdq.op_counts(m)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0
    assert not any(t.startswith("QLinear") or t.endswith("Integer") for t in counts)  # QDQ, not QOperator
    inits = {i.name: i for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    for node in m.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[node.input[2]]
            assert zp.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zp).any()  # symmetric int8
            assert inits.get(node.input[0]) is None or inits[node.input[0]].data_type != onnx.TensorProto.INT32
        if node.op_type in ("Conv", "Gemm"):
            w = producers[node.input[1]]
            assert w.op_type == "DequantizeLinear" and producers[node.input[0]].op_type == "DequantizeLinear"
            scale = numpy_helper.to_array(inits[w.input[1]])
            assert scale.ndim == 1 and scale.size == numpy_helper.to_array(inits[w.input[0]]).shape[0]  # per channel
            if len(node.input) > 2:
                assert node.input[2] in inits and inits[node.input[2]].data_type == onnx.TensorProto.FLOAT
    meta = qdq.metadata(m)
    assert meta["adn.precision"] == "int8" and meta["adn.subnet"] == code and meta["adn.quant.format"] == "QDQ"
    stats = qdq.check_qdq(m)
    assert stats.quantized_layers == stats.weighted_layers > 0


def test_every_quantizer_has_one_consumer_with_its_own_scale(quantized) -> None:
    """What lets ONNX Runtime's x86 kernels fuse every convolution (see qdq.py)."""
    d, _ = quantized
    m = onnx.load(str(d / "resnet_tiny_1111.int8.onnx"))
    consumers: dict[str, int] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert all(consumers[q.output[0]] == 1 for q in qs)
    assert len({tuple(q.input) for q in qs}) == len(qs)


def test_int8_initializer_names_follow_the_naming_contract(quantized) -> None:
    """Same name <=> same bytes across sub-networks, INT8 graphs included."""
    d, _ = quantized
    seen: dict[str, bytes] = {}
    for code in QUANTIZED:
        for code_file in (f"resnet_tiny_{code}.int8.onnx", f"resnet_tiny_{code}.onnx"):
            for init in onnx.load(str(d / code_file)).graph.initializer:
                data = numpy_helper.to_array(init).tobytes() + str(numpy_helper.to_array(init).dtype).encode()
                assert seen.setdefault(init.name, data) == data, init.name


def test_outputs_stay_close_to_fp32_and_top1_agrees(quantized) -> None:
    d, _ = quantized
    x, y = _test_split(d)
    for code in QUANTIZED:
        ref = logits(session(str(d / f"resnet_tiny_{code}.onnx")), x)
        out = logits(session(str(d / f"resnet_tiny_{code}.int8.onnx")), x)
        assert rel_err(out, ref) < LOGIT_REL_TOLERANCE, code
        agree = 100 * np.mean(out.argmax(1) == ref.argmax(1))
        assert agree >= MIN_AGREEMENT, (code, agree)
        drop = 100 * (np.mean(ref.argmax(1) == y) - np.mean(out.argmax(1) == y))
        assert drop <= MAX_DROP_POINTS, (code, drop)


# ------------------------------------------------------------------ records


def test_manifest_records_graph_calibration_and_accuracy(quantized) -> None:
    d, report = quantized
    m = manifest.load(d)
    for code in QUANTIZED:
        entry = m["subnets"][code]
        rec = entry["files"]["onnx_int8"]
        assert rec["path"] == f"resnet_tiny_{code}.int8.onnx"
        assert rec["sha256"] == sha256_file(d / rec["path"])
        q = entry["quantization"]
        assert q["method"]["name"] == qdq.DEFAULT_METHOD
        assert q["calibration"]["source"] == DATA and q["calibration"]["samples"] == SAMPLES
        assert q["settings"]["source_sha256"] == entry["files"]["onnx"]["sha256"]
        assert (d / q["cache"]["path"]).is_file()
        acc = q["accuracy"]
        assert acc["dataset"] == "fashion" and acc["split"] == "test" and acc["samples"] == TEST_IMAGES
        assert set(acc) >= {"top1_fp32", "top1_int8", "agreement", "drop", "warning"}
        assert entry["parity"]["onnx_int8"]["rel_err"] < LOGIT_REL_TOLERANCE
    assert "onnx_int8" not in m["subnets"]["0101"]["files"]  # only what was asked for
    assert any("fewer than the recommended 300" in w for w in report.warnings)


def test_eval_results_put_int8_next_to_fp32(quantized) -> None:
    from adn_edge.modeldir.results import load_eval

    d, _ = quantized
    int8 = json.loads((d / EVAL_INT8_FILENAME).read_text())
    assert int8["schema"] == 1 and int8["precision"] == "int8" and int8["dataset"] == "fashion"
    fp = json.loads((d / "eval.json").read_text())
    for code in QUANTIZED:
        e = int8["subnets"][code]
        assert e["top1_fp32"] - e["top1"] == pytest.approx(e["drop"], abs=1e-3)
        assert fp["subnets"][code]["top1"] == pytest.approx(e["top1_fp32"])
        assert fp["subnets"][code]["int8"]["top1"] == pytest.approx(e["top1"])
    # both files are readable by the runtime's accuracy-aware policies
    assert set(load_eval(d / EVAL_INT8_FILENAME, 4)) == set(QUANTIZED)
    assert set(load_eval(d / "eval.json", 4)) == set(QUANTIZED)


# ------------------------------------------------------------------ cache and staleness


def test_calibration_cache_is_reused_and_keyed(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adn_edge.quantize import QuantizeOptions, quantize_directory

    before = {c: sha256_file(workdir / f"resnet_tiny_{c}.int8.onnx") for c in QUANTIZED}
    # unchanged inputs: up to date, nothing is calibrated or written
    calls: list[str] = []
    real = qdq.calibrate
    monkeypatch.setattr(qdq, "calibrate", lambda *a, **k: (calls.append(str(a[0])), real(*a, **k))[1])
    r = quantize_directory(workdir, DATA, QUANTIZED, QuantizeOptions(samples=SAMPLES, eval_data=None))
    assert [s.status for s in r.subnets] == ["up to date"] * 2 and calls == []
    # --force re-quantises from the cached ranges: no calibration, identical graphs
    r = quantize_directory(workdir, DATA, QUANTIZED, QuantizeOptions(samples=SAMPLES, eval_data=None,
                                                                     force=True))
    assert [(s.status, s.cache) for s in r.subnets] == [("quantized", "hit")] * 2 and calls == []
    assert {c: sha256_file(workdir / f"resnet_tiny_{c}.int8.onnx") for c in QUANTIZED} == before
    # other images (another sample count): the key changes, the ranges are recomputed
    r = quantize_directory(workdir, DATA, ["0000"], QuantizeOptions(samples=SAMPLES + 16, eval_data=None))
    assert r.subnets[0].cache == "miss" and len(calls) == 1
    # another method has its own cache file
    r = quantize_directory(workdir, DATA, ["0000"], QuantizeOptions(method="minmax", samples=SAMPLES,
                                                                    eval_data=None))
    assert r.subnets[0].cache == "miss" and (workdir / "resnet_tiny_0000.int8.minmax.ranges.json").is_file()
    # --no-cache recalibrates even when the key matches
    r = quantize_directory(workdir, DATA, ["0000"], QuantizeOptions(method="minmax", samples=SAMPLES,
                                                                    eval_data=None, force=True,
                                                                    use_cache=False))
    assert r.subnets[0].cache == "miss" and len(calls) == 3


def test_changed_fp32_graph_invalidates_the_int8_graph(workdir: Path) -> None:
    """A re-exported FP32 graph (new sha256) is re-quantised and recalibrated."""
    from adn_edge.quantize import QuantizeOptions, quantize_directory

    m = manifest.load(workdir)
    g = onnx.load(str(workdir / "resnet_tiny_0000.onnx"))
    g.doc_string = "re-exported"
    onnx.save(g, str(workdir / "resnet_tiny_0000.onnx"))
    m["subnets"]["0000"]["files"]["onnx"] = manifest.file_record(workdir, "resnet_tiny_0000.onnx")
    manifest.save(workdir, m)
    r = quantize_directory(workdir, DATA, ["0000"], QuantizeOptions(samples=SAMPLES, eval_data=None))
    assert (r.subnets[0].status, r.subnets[0].cache) == ("quantized", "miss")


# ------------------------------------------------------------------ consumers


def test_engine_switcher_runs_the_int8_graphs(quantized) -> None:
    from adn_edge.runtime import EngineSwitcher

    d, _ = quantized
    x, _ = _test_split(d)
    x = x[:8]
    with EngineSwitcher.open(d, backend="onnxruntime", subnets=QUANTIZED, precision="int8") as sw:
        for code in QUANTIZED:
            sw.switch(code)
            got = np.asarray(sw.infer(x))
            want = logits(session(str(d / f"resnet_tiny_{code}.int8.onnx")), x)
            assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
        assert sw.describe()["engine"]["sharing"]["conflicts"] == []


@pytest.mark.parametrize("trt", ["10.3.0", "11.0.0"])
@pytest.mark.parametrize("precision", ["int8", "best"])
def test_tensorrt_builds_int8_from_the_qdq_graph(quantized, tmp_path: Path, trt: str, precision: str) -> None:
    """`adn-edge build --precision int8` plans from onnx_int8 on TensorRT 10.x and 11.x, also when
    a leftover implicit-calibration cache is present (only --calib overrides it on 10.x)."""
    from adn_edge.backends.tensorrt.options import BuildOptions
    from adn_edge.backends.tensorrt.plan import plan_unit_builds
    from adn_edge.backends.tensorrt.units import subnet_units
    from adn_edge.backends.tensorrt.env import Environment
    from adn_edge.modeldir.names import calibration_cache_name

    d, _ = quantized
    m = manifest.load(d)
    env = Environment(trt, "Orin", "8.7")
    opts = BuildOptions(precision=precision)
    jobs = plan_unit_builds(d, str(m["arch"]), subnet_units(m, QUANTIZED), opts, env, calibrate=False)
    assert [j.source.key for j in jobs] == ["onnx_int8"] * 2
    assert all(j.source_record["sha256"] == m["subnets"][j.code]["files"]["onnx_int8"]["sha256"] for j in jobs)
    (d / calibration_cache_name("resnet_tiny", "1111")).write_bytes(b"stale")
    try:
        jobs = plan_unit_builds(d, str(m["arch"]), subnet_units(m, ["1111"]), opts, env, calibrate=False)
        assert jobs[0].source.key == "onnx_int8" and not jobs[0].source.calibrate
    finally:
        (d / calibration_cache_name("resnet_tiny", "1111")).unlink()


@pytest.mark.parametrize("method", qdq.METHODS)
def test_every_method_with_a_short_last_batch(fp32dir: Path, method: str) -> None:
    """20 images = batches of 8, 8 and 4: the histogram methods must not stack unequal batches."""
    from adn_edge.quantize import QuantizeOptions, quantize_directory

    r = quantize_directory(fp32dir, DATA, ["0000"], QuantizeOptions(method=method, samples=20, eval_data=None))
    (s,) = r.subnets
    assert s.status == "quantized" and s.stats["quantized_layers"] == s.stats["weighted_layers"]
    assert s.rel_err is not None and np.isfinite(s.rel_err)
    rec = json.loads((fp32dir / f"resnet_tiny_0000.int8.{method}.ranges.json").read_text())
    assert rec["adn_edge"]["samples"] == 20 and rec["adn_edge"]["method"]["name"] == method


# ------------------------------------------------------------------ units


def test_is_quantized_and_methods(exported: Path, quantized) -> None:
    assert not qdq.is_quantized(onnx.load(str(exported / "resnet_tiny_1111.onnx")))
    assert qdq.is_quantized(onnx.load(str(quantized[0] / "resnet_tiny_1111.int8.onnx")))
    with pytest.raises(Exception, match="Unknown calibration method"):
        qdq.Method("kl")
    keys = {qdq.cache_key("g", "d", qdq.Method(m), 128) for m in qdq.METHODS}
    keys.add(qdq.cache_key("g", "d", qdq.Method("percentile", 99.99), 128))
    keys.add(qdq.cache_key("g", "d", qdq.Method("percentile"), 256))
    keys.add(qdq.cache_key("g2", "d", qdq.Method("percentile"), 128))
    keys.add(qdq.cache_key("g", "d2", qdq.Method("percentile"), 128))
    assert len(keys) == 7
