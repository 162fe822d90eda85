"""Precision verification from engine-inspector JSON (hand-written samples in data/)."""

from __future__ import annotations

import json

import pytest

from adn_edge.errors import BuildFailure
from adn_edge.backends.tensorrt.precision import (
    FP16, FP32, INT8, UNKNOWN, PrecisionMismatch, label, summarize, tensor_precision, verify,
)
from _buildkit import inspector


@pytest.mark.parametrize("text,want", [
    ("Row major linear FP32", FP32),
    ("Row major linear FP16 format", FP16),
    ("Channel major FP16 format where channel % 8 == 0", FP16),
    ("Two wide channel vectorized row major FP16 format", FP16),
    ("Thirty-two wide channel vectorized row major Int8 format.", INT8),
    ("Four wide channel vectorized row major Int8 format", INT8),
    ("Float", FP32), ("Half", FP16), ("Int8", INT8), ("BFloat16", "BF16"), ("UInt8", "UINT8"),
    ("Row major linear Int32", "INT32"), ("Bool", "BOOL"), ("FP8", "FP8"),
    ("N/A due to dynamic shapes", UNKNOWN), ("", UNKNOWN),
])
def test_tensor_format_strings(text: str, want: str) -> None:
    assert tensor_precision({"Format/Datatype": text}) == want


def test_trt11_datatype_field_wins_over_format() -> None:
    assert tensor_precision({"DataType": "Half", "Format": "Row major linear format"}) == FP16
    assert tensor_precision("not a dict") == UNKNOWN


def test_fp16_engine_summary() -> None:
    s = summarize(inspector("fp16_trt10"))
    assert s.detailed and len(s.layers) == 6
    # Reformat and NoOp layers are bookkeeping, not compute
    assert [layer.layer_type for layer in s.compute_layers] == [
        "CaskConvolution", "CaskPooling", "CaskGemmMatrixMultiply"]
    assert s.counts() == {FP16: 3}
    assert s.reduced_fraction() == 1.0
    assert s.label() == "fp16"
    assert s.io_tensors == ("input", "logits")
    rec = s.as_record()
    assert rec == {"layers": 6, "compute_layers": 3, "by_precision": {"FP16": 3}, "reduced_fraction": 1.0,
                   "detailed": True}
    assert verify(s, "fp16") == []


def test_fp16_request_that_came_out_fp32_fails_loudly() -> None:
    s = summarize(inspector("fp32_trt10"))
    assert s.counts() == {FP32: 3}
    with pytest.raises(PrecisionMismatch, match="FP16 build came out without any FP16 layer"):
        verify(s, "fp16", "tiny_11.fp16.engine")
    assert issubclass(PrecisionMismatch, BuildFailure) and PrecisionMismatch.exit_code == 1
    assert verify(s, "fp32") == []


def test_int8_and_best() -> None:
    s = summarize(inspector("int8_trt10"))
    assert s.counts()[INT8] >= 2 and s.label().startswith("mixed(int8")
    assert verify(s, "int8") == [] or all("INT8" in w for w in verify(s, "int8"))
    assert not any("reduced" in w for w in verify(s, "best"))
    with pytest.raises(PrecisionMismatch, match="INT8 build"):
        verify(summarize(inspector("fp16_trt10")), "int8")
    with pytest.raises(PrecisionMismatch, match="best"):
        verify(summarize(inspector("fp32_trt10")), "best")


def test_fp32_request_with_reduced_layers_warns() -> None:
    warnings = verify(summarize(inspector("fp16_trt10")), "fp32", "x.engine")
    assert len(warnings) == 1 and "reduced precision" in warnings[0]


def test_partial_fp16_warns() -> None:
    data = json.loads(inspector("fp16_trt10"))
    fp32 = json.loads(inspector("fp32_trt10"))
    data["Layers"][1] = fp32["Layers"][1]  # the convolution stays FP32
    data["Layers"][2] = fp32["Layers"][2]
    s = summarize(data)
    assert s.counts() == {FP32: 2, FP16: 1}
    warnings = verify(s, "fp16")
    assert len(warnings) == 1 and "only 1 of 3" in warnings[0]


def test_names_only_engine_cannot_be_verified() -> None:
    s = summarize(inspector("names_only"))
    assert not s.detailed and len(s.layers) == 6
    with pytest.raises(PrecisionMismatch, match="layer names only"):
        verify(s, "fp16")


def test_dynamic_shapes_without_context_cannot_be_verified() -> None:
    s = summarize(inspector("dynamic_na"))
    assert s.detailed and s.counts() == {UNKNOWN: 3}
    with pytest.raises(PrecisionMismatch, match="no data type"):
        verify(s, "fp16")


def test_trt11_schema() -> None:
    s = summarize(inspector("fp16_trt11"))
    assert s.counts() == {FP16: 3}
    assert s.io_tensors == ("input", "logits")
    assert verify(s, "fp16") == []


@pytest.mark.parametrize("bad", ["not json", json.dumps({"Bindings": []}), json.dumps([1, 2])])
def test_unreadable_inspector_output(bad: str) -> None:
    with pytest.raises(BuildFailure):
        summarize(bad)


def test_label() -> None:
    assert label({}) == "unknown"
    assert label({"FP16": 3, "unknown": 2}) == "fp16"
    assert label({"FP16": 3, "FP32": 1}) == "mixed(fp16 75%)"
