"""Segment export options: float16 twins, refusal of mixed recalibration, re-export.

The chain/manifest basics (fp32, shared names with the monolithic graphs, the
ONNX Runtime segmented mode) are in tests/runtime/test_segments.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from adn_edge import subnet
from adn_edge.modeldir.names import LOCK
from adn_edge.modeldir import manifest
from adn_edge.errors import AdnError, ParityError
from adn_edge.export import ExportOptions, export
from adn_edge.export.parity import FP16_TOLERANCE
from adn_edge.export.segments import export_segments, segment_file
from adn_edge.fileio import sha256_file
from adn_edge.runtime import EngineSwitcher
from tests._util import rel_err

ARCH = "resnet_tiny"
KINDS = ("full", "skip")


@pytest.fixture(scope="module")
def fp16_dir(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("seg16")
    return d, export_segments(model, d, options=ExportOptions(fp16=True))


def _recalibrated_dir(model, d):
    export(model, d, ["1111"], options=ExportOptions(recalibration=[torch.randn(16, 3, 32, 32)],
                                                     recalibration_source="test-batches"))
    return d


def test_fp16_twins_are_written_hashed_and_recorded(fp16_dir) -> None:
    d, rec = fp16_dir
    assert json.loads((d / "manifest.json").read_text())["segments"] == rec
    assert rec["schema"] == 1
    for k, part in enumerate(rec["parts"]):
        for kind in KINDS:
            r16 = part["files_fp16"][kind]
            assert r16["path"] == segment_file(ARCH, k, kind, ".fp16") == f"{ARCH}_seg{k}_{kind}.fp16.onnx"
            assert sha256_file(d / r16["path"]) == r16["sha256"] and (d / r16["path"]).stat().st_size == r16["bytes"]
            g32, g16 = onnx.load(d / part["files"][kind]["path"]), onnx.load(d / r16["path"])
            meta = {p.key: p.value for p in g16.metadata_props}
            assert (meta["adn.precision"], meta["adn.segment"], meta["adn.kind"]) == ("fp16", str(k), kind)
            # TensorRT shares nothing by name, but the runtime's weight sharing and the
            # build's bookkeeping rely on the fp16 twin naming its tensors as the fp32 graph does.
            assert sorted(i.name for i in g16.graph.initializer) == sorted(i.name for i in g32.graph.initializer)
            assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in g16.graph.initializer)
            assert not any(i.data_type == onnx.TensorProto.FLOAT for i in g16.graph.initializer)
            # float32 at every boundary: the chain hands float32 activations from part to part
            assert [v.name for v in g16.graph.input] == [part["input"]]
            assert [v.name for v in g16.graph.output] == [part["output"]]
            for v in (*g16.graph.input, *g16.graph.output):
                assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    p32, p16 = rec["parity"], rec["parity_fp16"]
    assert set(p16) == set(p32) and p16["tolerance"] == FP16_TOLERANCE
    assert p32["rel_err_max"] < p16["rel_err_max"] <= FP16_TOLERANCE  # really float16 inside, and close
    for code in subnet.all_codes(4):
        assert rec["subnets"][code]["rel_err_fp16"] <= p16["rel_err_max"]


def test_fp16_chains_match_the_fp32_chains(fp16_dir) -> None:
    d, _ = fp16_dir
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32), dtype=np.float32)
    with EngineSwitcher.open(d, segmented=True, threads=1) as s32, \
            EngineSwitcher.open(d, segmented=True, precision="fp16", threads=1) as s16:
        assert s16.describe()["engine"]["precision"] == "fp16"
        for code in subnet.all_codes(4):
            err = rel_err(torch.from_numpy(s16.infer(x, code)), torch.from_numpy(s32.infer(x, code)))
            assert 0 < err <= FP16_TOLERANCE, code


def test_fp16_parity_failure_writes_nothing(model, tmp_path) -> None:
    """The fp32 chains pass here; an fp16 failure must still keep them unwritten."""
    with pytest.raises(ParityError, match="fp16"):
        export_segments(model, tmp_path, options=ExportOptions(fp16=True, fp16_tolerance=1e-9))
    assert [p.name for p in tmp_path.iterdir()] in ([], [LOCK])  # the writer lock is all that may exist


def test_recalibrated_segments_are_refused_beside_plain_graphs(model, tmp_path) -> None:
    """Recalibrated (corrected) segments are allowed now (tests/export/test_segment_corrections.py),
    but not beside un-recalibrated graphs: that would be two models in one directory."""
    d = tmp_path / "d"
    export(model, d, ["1111"])
    before = sorted(p.name for p in d.iterdir()), (d / "manifest.json").read_bytes()
    opts = ExportOptions(recalibration=[torch.randn(4, 3, 32, 32)], recalibration_source="builtin")
    with pytest.raises(AdnError, match="without BatchNorm recalibration") as e:
        export_segments(model, d, options=opts)
    assert "second, different model" in e.value.message and "--out OTHER_DIR" in (e.value.hint or "")
    assert (sorted(p.name for p in d.iterdir()), (d / "manifest.json").read_bytes()) == before


def test_segments_are_refused_beside_recalibrated_graphs(model, tmp_path) -> None:
    d = _recalibrated_dir(model, tmp_path / "d")
    before = (d / "manifest.json").read_bytes()
    with pytest.raises(AdnError, match="'test-batches'") as e:
        export_segments(model, d)
    assert "second, different model" in e.value.message
    assert (d / "manifest.json").read_bytes() == before
    assert not list(d.glob("*_seg*"))


def test_reexport_keeps_engine_records_and_fp16_forms(fp16_dir, model, tmp_path) -> None:
    """Engine records (written by `adn-edge build --segments`) and the fp16 twins of an
    earlier export survive a fp32-only re-export of the same checkpoint."""
    d = tmp_path / "d"
    shutil.copytree(fp16_dir[0], d)
    m = manifest.load(d)
    engine = {"path": f"{ARCH}_seg0_full.fp16.engine", "sha256": "0" * 64, "bytes": 0, "precision": "fp16",
              "tensorrt_version": "10.3.0", "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}
    m["segments"]["parts"][0]["engines"] = {"full": {"fp16": engine}}
    manifest.save(d, m)
    rec = export_segments(model, d)
    assert rec["parts"][0]["engines"] == {"full": {"fp16": engine}}
    assert rec["parts"][3]["files_fp16"] == fp16_dir[1]["parts"][3]["files_fp16"]
    assert rec["parity_fp16"] == fp16_dir[1]["parity_fp16"]
    assert manifest.load(d)["segments"] == rec
