"""Segment export: 2*S graphs, recorded in the manifest, sharing names with the monolithic ones."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from adn_edge.modeldir import manifest
from adn_edge.errors import AdnError
from adn_edge.export.segments import io_names, segment_file
from adn_edge.fileio import sha256_file
from adn_edge.runtime import EngineSwitcher
from tests.runtime._helpers import CODES, TOL, rel_err


def test_manifest_records_segments(model_dir):
    m = manifest.load(model_dir)
    seg = m["segments"]
    assert seg["schema"] == 1 and seg["count"] == 4 and len(seg["parts"]) == 4
    assert len(m["subnets"]) == 16  # the monolithic export is still all there
    for k, part in enumerate(seg["parts"]):
        assert (part["input"], part["output"]) == io_names(k, 4)
        for kind in ("full", "skip"):
            rec = part["files"][kind]
            assert rec["path"] == segment_file("resnet_tiny", k, kind) == f"resnet_tiny_seg{k}_{kind}.onnx"
            assert sha256_file(model_dir / rec["path"]) == rec["sha256"]
        if k:
            assert part["input_shape"] == seg["parts"][k - 1]["output_shape"]
    assert seg["parts"][0]["input_shape"] == [None, 3, 32, 32]
    assert seg["parts"][-1]["output_shape"] == [None, 10]
    assert seg["parity"]["rel_err_max"] <= seg["parity"]["tolerance"] == TOL
    assert set(seg["subnets"]) == set(CODES)
    assert seg["subnets"]["1111"]["gmacs"] == m["subnets"]["1111"]["gmacs"]
    w = seg["weights"]
    assert w["bytes_unique"] < w["bytes_total"]


def _inits(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


def test_segment_weights_are_the_monolithic_ones_by_name(model_dir):
    """Same stable names, same bytes: a runtime may share them across both kinds of graph,
    and the segments together hold exactly the tensors of all 16 graphs."""
    mono: dict[str, np.ndarray] = {}
    for code in CODES:
        mono.update(_inits(model_dir / f"resnet_tiny_{code}.onnx"))
    seg: dict[str, np.ndarray] = {}
    for k in range(4):
        for kind in ("full", "skip"):
            g = onnx.load(model_dir / segment_file("resnet_tiny", k, kind))
            meta = {p.key: p.value for p in g.metadata_props}
            assert meta["adn.segment"] == str(k) and meta["adn.kind"] == kind
            assert not any(n.op_type == "BatchNormalization" for n in g.graph.node)
            seg.update(_inits(model_dir / segment_file("resnet_tiny", k, kind)))
    assert set(seg) == set(mono)
    for name, arr in seg.items():
        assert np.array_equal(arr, mono[name]), name
    skip_twins = [n for n in seg if n.endswith(".skip")]
    assert skip_twins  # mandatory blocks in skipped stages carry their own folded weights


def test_segmented_chain_equals_monolithic(model_dir, inputs):
    with EngineSwitcher.open(model_dir, threads=1, segmented=False) as mono, \
            EngineSwitcher.open(model_dir, segmented=True, threads=1, check_sharing=True) as seg:
        assert seg.describe()["engine"]["segments"] == 8
        assert seg.describe()["engine"]["sharing_probe"]["ok"]
        for code in CODES:
            assert rel_err(seg.infer(inputs[4], code), mono.infer(inputs[4], code)) <= TOL


def test_segmented_precisions(model_dir):
    """fp32, or fp16 / int8 where `export --segments --fp16` / `quantize --segments` wrote them."""
    with pytest.raises(AdnError, match="no int8 segment graphs") as e:
        EngineSwitcher.open(model_dir, segmented=True, precision="int8")
    assert "quantize DIR --segments" in (e.value.hint or "")
    with pytest.raises(AdnError, match="no fp16 segment graphs") as e:
        EngineSwitcher.open(model_dir, segmented=True, precision="fp16")
    assert "--segments --fp16" in (e.value.hint or "")
