"""Recalibrated segments: per-sub-network BatchNorm statistics as graph inputs.

``export --segments --recalibrate``: the segment graphs fold reference statistics and
take a per-channel affine correction after each folded convolution as inputs; the
vectors of every code prefix are in one ``.npz`` (adn_edge/export/corrections.py).
Running them through the segmented runtime is in tests/runtime/test_segments_corrected.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError, ParityError
from adn_edge.export import ExportOptions, export
from adn_edge.export import corrections as corr
from adn_edge.export.segments import _run_chain, corrections_file, export_segments
from adn_edge.fileio import sha256_file
from adn_edge.materialize import materialize
from adn_edge.modeldir import manifest
from adn_edge.modeldir.names import LOCK
from adn_edge.train.recalibrate import recalibrated

ARCH = "resnet_tiny"
KINDS = ("full", "skip")
FLAGS = {"full": "1", "skip": "0"}


def _batches(seed: int = 0, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # shifted and scaled: statistics clearly unlike the checkpoint's, so corrections matter
    return [torch.randn(16, 3, 32, 32, generator=g) * 1.5 + 0.3 for _ in range(n)]


def _opts(batches: list[torch.Tensor] | None = None, **kw) -> ExportOptions:
    return ExportOptions(recalibration=batches or _batches(), recalibration_source="test-batches", **kw)


@pytest.fixture(scope="module")
def corrected(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("segcorr")
    return d, export_segments(model, d, options=_opts())


@pytest.fixture(scope="module")
def plain(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("segplain")
    return d, export_segments(model, d)


def _sessions(d, rec):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return [{FLAGS[kind]: ort.InferenceSession(str(d / part["files"][kind]["path"]), so,
                                               providers=["CPUExecutionProvider"]) for kind in KINDS}
            for part in rec["parts"]]


def _feeds(d, rec):
    m = manifest.load(d)
    arrays = manifest.read_segment_corrections(d, m["segments"])
    inputs = {}
    for part in rec["parts"]:
        for kind in KINDS:
            g = onnx.load(d / part["files"][kind]["path"])
            inputs[(part["index"], FLAGS[kind])] = [v.name for v in g.graph.input][1:]
    return manifest.correction_feeds(arrays, rec["count"], inputs, "test")


def test_correction_math_turns_reference_folding_into_the_subnetworks_own() -> None:
    """y' = a*y + b with a = sigma_r/sigma_c, b = beta(1-a) + gamma(mu_r-mu_c)/sigma_c."""
    rng = np.random.default_rng(0)
    c, eps = 7, 1e-5
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    ref = (rng.normal(size=c), rng.uniform(0.2, 3, size=c))
    cur = (rng.normal(size=c), rng.uniform(0.2, 3, size=c))
    z = rng.normal(size=(50, c)) * 2

    def bn(stats):
        return gamma * (z - stats[0]) / np.sqrt(stats[1] + eps) + beta

    a, b = corr.affine(ref, cur, gamma, beta, eps)
    np.testing.assert_allclose(a * bn(ref) + b, bn(cur), rtol=1e-12, atol=1e-12)
    # the shift alone is what a norm with the sub-network's mean and the reference variance computes
    a1, b1 = corr.affine(ref, cur, gamma, beta, eps, "shift")
    assert np.all(a1 == 1)
    np.testing.assert_allclose(bn(ref) + b1, bn(corr.approximated_stats(ref, cur, "shift")), atol=1e-12)
    assert corr.approximated_stats(ref, cur, "none") is ref and corr.approximated_stats(ref, cur, "affine") is cur
    s, m = corr.deviations(ref, cur, eps)
    assert s == pytest.approx(np.max(np.abs(a - 1))) and m > 0
    assert corr.choose_mode(s, m, None) == "affine" and corr.choose_mode(s, m, s + m) == "none"
    assert corr.choose_mode(0.01, 0.5, 0.1) == "shift"


def test_graphs_take_corrections_as_inputs_and_keep_stable_names(corrected, plain) -> None:
    d, rec = corrected
    dp, recp = plain
    m = manifest.load(d)
    assert m["segments"] == rec and m["recalibration"]["data"] == "test-batches"
    c = rec["corrections"]
    assert c["file"]["path"] == corrections_file(ARCH) == f"{ARCH}_seg_corrections.npz"
    assert sha256_file(d / c["file"]["path"]) == c["file"]["sha256"]
    assert (c["data"], c["samples"], c["reference"], c["threshold"]) == ("test-batches", 32, "checkpoint", None)
    assert c["convs"]["shift"] == c["convs"]["none"] == 0 and c["convs"]["affine"] > 0
    assert rec["parity"]["rel_err_max"] <= rec["parity"]["tolerance"]
    data = (d / c["file"]["path"]).read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:  # plain arrays, no pickle
        keys = set(z.files)
    assert len(keys) == c["inputs"]
    expected = 0
    for part, partp in zip(rec["parts"], recp["parts"], strict=True):
        k = part["index"]
        for kind in KINDS:
            g = onnx.load(d / part["files"][kind]["path"])
            gp = onnx.load(dp / partp["files"][kind]["path"])
            # the weights are the plain segments' (folded with the checkpoint's statistics), by name and bytes
            inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
            initsp = {i.name: onnx.numpy_helper.to_array(i) for i in gp.graph.initializer}
            assert inits.keys() == initsp.keys()
            assert all(np.array_equal(inits[n], initsp[n]) for n in inits)
            names = [v.name for v in g.graph.input]
            assert names[0] == part["input"]
            extra = names[1:]
            convs = sum(1 for n in g.graph.node if n.op_type == "Conv")
            assert len(extra) == 2 * convs  # every folded convolution corrected, scale and shift
            assert {n.rsplit(".", 1)[1] for n in extra} == {"corr_scale", "corr_shift"}
            if kind == "skip" and k == 1:
                assert any(".skip.corr_" in n for n in extra)  # twin norms: named as their folded weights
            for v in g.graph.input[1:]:
                dims = [x.dim_value for x in v.type.tensor_type.shape.dim]
                assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and dims[0] == 1 and dims[2:] == [1, 1]
            meta = {p.key: p.value for p in g.metadata_props}
            assert meta["adn.corrections"] == "checkpoint" and meta["adn.segment"] == str(k)
            # part k's vectors: one set per prefix code[:k+1] ending in this form's flag
            for p in corr.prefixes(k + 1):
                if p[-1] == FLAGS[kind]:
                    assert {corr.key(p, n) for n in extra} <= keys
                    expected += len(extra)
    assert expected == len(keys)


def test_every_chain_fed_its_corrections_is_the_recalibrated_subnetwork(model, corrected) -> None:
    d, rec = corrected
    sessions, feeds = _sessions(d, rec), _feeds(d, rec)
    batches = _batches()
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    for code in subnet.all_codes(4):
        with torch.no_grad():
            want = materialize(recalibrated(model, code, batches), code)(torch.from_numpy(x)).double().numpy()
        got = _run_chain(sessions, code, x, feeds)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4, code
        plain = _run_chain(sessions, code, x, [{p: {n: np.ones_like(a) if n.endswith(corr.SCALE) else
                                                    np.zeros_like(a) for n, a in f.items()} for p, f in per.items()}
                                               for per in feeds])
        with torch.no_grad():
            ckpt = materialize(model, code)(torch.from_numpy(x)).double().numpy()
        # identity corrections give back the checkpoint's sub-network: the folding is the reference
        assert np.linalg.norm(plain - ckpt) / np.linalg.norm(ckpt) < 1e-4, code
        if code not in ("1111",):
            assert np.linalg.norm(got - ckpt) / np.linalg.norm(ckpt) > 1e-3, code  # the corrections matter


def test_parity_failure_writes_nothing(model, tmp_path) -> None:
    with pytest.raises(ParityError, match="fed its corrections"):
        export_segments(model, tmp_path, options=_opts(tolerance=1e-12))
    assert [p.name for p in tmp_path.iterdir()] in ([], [LOCK])


def test_beside_monolithic_graphs_of_the_same_recalibration_only(model, tmp_path) -> None:
    d = tmp_path / "d"
    export(model, d, ["1111"], options=_opts())
    rec = export_segments(model, d, options=_opts())
    m = manifest.load(d)
    assert "1111" in m["subnets"] and m["segments"]["corrections"] == rec["corrections"]
    # other data or samples: a second model, refused before anything is written
    before = sorted(p.name for p in d.iterdir()), (d / "manifest.json").read_bytes()
    with pytest.raises(AdnError, match="16 samples") as e:
        export_segments(model, d, options=_opts(_batches(n=1)))
    assert "--out OTHER_DIR" in (e.value.hint or "")
    other = ExportOptions(recalibration=_batches(), recalibration_source="other-data")
    with pytest.raises(AdnError, match="'other-data'"):
        export_segments(model, d, options=other)
    with pytest.raises(AdnError, match="un-recalibrated segments"):
        export_segments(model, d)
    assert (sorted(p.name for p in d.iterdir()), (d / "manifest.json").read_bytes()) == before


def test_cheap_form_drops_small_corrections_and_checks_parity_against_what_it_computes(model, corrected,
                                                                                         tmp_path) -> None:
    d0, rec0 = corrected
    dev = rec0["corrections"]["deviation"]
    threshold = min(dev["scale_max"], dev["shift_max"]) / 3
    rec = export_segments(model, tmp_path / "t", options=_opts(), correction_threshold=threshold)
    c = rec["corrections"]
    assert c["threshold"] == threshold and c["inputs"] < rec0["corrections"]["inputs"]
    assert sum(c["convs"].values()) == sum(rec0["corrections"]["convs"].values())
    assert c["convs"]["affine"] < sum(c["convs"].values())
    assert rec["parity"]["rel_err_max"] <= rec["parity"]["tolerance"]  # against the approximated statistics
    # Nothing kept: plain graphs, no inputs; the chains compute the checkpoint's sub-networks
    big = export_segments(model, tmp_path / "n", options=_opts(), correction_threshold=1e9)
    assert big["corrections"]["inputs"] == 0 and big["corrections"]["convs"]["affine"] == 0
    g = onnx.load(tmp_path / "n" / big["parts"][0]["files"]["full"]["path"])
    assert [v.name for v in g.graph.input] == ["input"]


def test_joint_reference_folds_the_joint_statistics(model, tmp_path) -> None:
    rec = export_segments(model, tmp_path, options=_opts(), correction_reference="joint")
    assert rec["corrections"]["reference"] == "joint"
    g = onnx.load(tmp_path / rec["parts"][1]["files"]["skip"]["path"])
    names = {i.name for i in g.graph.initializer}
    assert any(n.endswith("@joint") for n in names)  # other bytes than the checkpoint's folding: other names
    assert json.loads((tmp_path / "manifest.json").read_text())["segments"]["corrections"]["reference"] == "joint"


@pytest.mark.parametrize("kw, match", [
    ({"correction_threshold": -1.0}, "at least 0"),
    ({"correction_threshold": float("nan")}, "finite"),
    ({"correction_reference": "median"}, "checkpoint, joint"),
])
def test_bad_correction_options_are_refused(model, tmp_path, kw, match) -> None:
    with pytest.raises(AdnError, match=match):
        export_segments(model, tmp_path / "d", options=_opts(), **kw)
    assert not (tmp_path / "d").exists()


def test_correction_options_need_recalibration(model, tmp_path) -> None:
    with pytest.raises(AdnError, match="recalibrated segments only"):
        export_segments(model, tmp_path / "d", correction_threshold=0.1)
    assert not (tmp_path / "d").exists()


def test_folder_records_the_norm_it_folded(model) -> None:
    from adn_edge.models.folding import Folder

    folder = Folder(model)
    parts = model.static_stages("1010", folder)
    folded = {n: mod for part in parts for n, mod in part.named_modules() if hasattr(mod, "adn_bn")}
    assert folded
    norms = dict(model.named_modules())
    for mod in folded.values():
        assert isinstance(norms[mod.adn_bn], nn.BatchNorm2d)
    convs = corr.folded_convs(parts[1])
    assert any(c.bn.endswith("_skip") and c.name.endswith(".skip") for c in convs.values())
