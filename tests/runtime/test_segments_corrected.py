"""The segmented ONNX Runtime backend over corrected (recalibrated) segments.

Each run feeds every part the correction vectors of its code prefix
(adn_edge/export/corrections.py); the chains must be the sub-networks recalibrated in
PyTorch, on every run path (OrtValue hand-over, own output buffers, arena-shrinking
runs), and agree with the recalibrated monolithic graphs of the same directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adn_edge.errors import AdnError
from adn_edge.export import ExportOptions, export
from adn_edge.export.segments import export_segments
from adn_edge.materialize import materialize
from adn_edge.modeldir import manifest
from adn_edge.runtime import EngineSwitcher
from adn_edge.train.recalibrate import recalibrated
from tests.runtime._helpers import ARCH, CODES

MONO = ["1111", "1010", "0001"]


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(16, 3, 32, 32, generator=g) * 1.5 + 0.3 for _ in range(2)]


@pytest.fixture(scope="module")
def corrected_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    """Recalibrated monolithic graphs of a few codes and the corrected segments, one directory."""
    d = tmp_path_factory.mktemp("corrected") / ARCH
    opts = ExportOptions(recalibration=_batches(), recalibration_source="test-batches")
    export(tiny_model, d, MONO, options=opts)
    export_segments(tiny_model, d, options=opts)
    return d


@pytest.fixture(scope="module")
def recalibrated_refs(tiny_model, inputs) -> dict[str, list[np.ndarray]]:
    out = {}
    with torch.no_grad():
        for code in CODES:
            static = materialize(recalibrated(tiny_model, code, _batches()), code)
            out[code] = [static(torch.from_numpy(x)).double().numpy() for x in inputs]
    return out


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("options", [{}, {"max_batch": 2}, {"arena_shrink_above": 2}, {"single_session": False},
                                     {"single_session": False, "max_batch": 2},
                                     {"single_session": False, "arena_shrink_above": 2}],
                         ids=["one-session", "one-session-chunks", "one-session-arena-shrinking", "ortvalues",
                              "own-buffers", "arena-shrinking"])
def test_chains_are_the_recalibrated_subnetworks(corrected_dir, inputs, recalibrated_refs, options) -> None:
    with EngineSwitcher.open(corrected_dir, segmented=True, threads=1, **options) as sw:
        info = sw.describe()["engine"]
        assert info["segment_corrections"]["reference"] == "checkpoint"
        assert info["single_session"] is options.get("single_session", True)
        for code in CODES:
            for x, ref in zip(inputs, recalibrated_refs[code], strict=True):
                assert _err(sw.infer(x, code), ref) < 1e-4, (code, x.shape)


def test_one_session_feeds_the_corrections_the_chain_feeds(corrected_dir, inputs) -> None:
    """Bit for bit: the same kernels on the same weights and the same correction vectors."""
    with EngineSwitcher.open(corrected_dir, segmented=True, threads=1) as one, \
            EngineSwitcher.open(corrected_dir, segmented=True, threads=1, single_session=False) as chain:
        for code in CODES:
            np.testing.assert_array_equal(one.infer(inputs[3], code), chain.infer(inputs[3], code))


def test_segmented_and_monolithic_modes_agree(corrected_dir, inputs) -> None:
    with EngineSwitcher.open(corrected_dir, segmented=True, threads=1) as seg, \
            EngineSwitcher.open(corrected_dir, threads=1) as mono:
        for code in MONO:
            for x in inputs[:3]:
                assert _err(seg.infer(x, code), mono.infer(x, code).astype(np.float64)) < 1e-4, code


def test_differs_from_the_plain_segments(corrected_dir, model_dir, inputs) -> None:
    with EngineSwitcher.open(corrected_dir, segmented=True, threads=1) as c, \
            EngineSwitcher.open(model_dir, segmented=True, threads=1) as p:
        x = inputs[2]
        assert _err(c.infer(x, "1010"), p.infer(x, "1010").astype(np.float64)) > 1e-3


def test_tampered_corrections_are_refused(corrected_dir, tmp_path) -> None:
    d = tmp_path / ARCH
    shutil.copytree(corrected_dir, d)
    rec = manifest.load(d)["segments"]["corrections"]["file"]
    path = d / rec["path"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(AdnError, match=rec["path"]):
        EngineSwitcher.open(d, segmented=True, threads=1)


def test_corrected_graphs_without_their_record_are_refused(corrected_dir, tmp_path) -> None:
    d = tmp_path / ARCH
    shutil.copytree(corrected_dir, d)
    m = manifest.load(d)
    del m["segments"]["corrections"]
    manifest.save(d, m)
    with pytest.raises(AdnError, match="lists no corrections"):
        EngineSwitcher.open(d, segmented=True, threads=1)


def test_missing_vectors_are_refused(corrected_dir, tmp_path) -> None:
    import io

    d = tmp_path / ARCH
    shutil.copytree(corrected_dir, d)
    m = manifest.load(d)
    rec = m["segments"]["corrections"]
    with np.load(d / rec["file"]["path"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("01:")}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (d / rec["file"]["path"]).write_bytes(buf.getvalue())
    rec["file"] = manifest.file_record(d, rec["file"]["path"])
    manifest.save(d, m)
    with pytest.raises(AdnError, match="starting 01"):
        EngineSwitcher.open(d, segmented=True, threads=1)
