"""Export: graphs, parity, stable names, metadata, manifest (docs/model-directory.md).

Uses the small ``resnet_tiny`` with random well-conditioned weights whose
``_skip`` twins differ from their main norms, so a folding or twin mistake fails
parity by orders of magnitude. ONNX Runtime vs ADN forward tolerance: 1e-4 relative.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from adn_edge import subnet
from adn_edge.modeldir import manifest
from adn_edge.errors import ParityError
from adn_edge.export import Exporter, ExportOptions, export
from adn_edge.export.parity import onnxruntime_logits
from tests._util import rel_err

ARCH = "resnet_tiny"


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    results = export(model, out, "all", source={"path": "x", "sha256": "abc", "weights": "plain"},
                     options=ExportOptions(fp16=True))
    return out, results


def load(out, code, variant=""):
    return onnx.load(str(out / f"{ARCH}_{code}{variant}.onnx"))


def test_every_subnet_exported_super_first_and_verified(exported, model) -> None:
    out, results = exported
    assert [r.code for r in results][0] == "1111" and len(results) == 16
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    for r in results:
        assert r.parity["onnx"].rel_err <= 1e-4
        got = onnxruntime_logits(str(out / r.files["onnx"]), x)  # batch 3: the batch is dynamic
        with torch.no_grad():
            ref = model(torch.from_numpy(x), skip=subnet.to_skip(r.code))
        assert rel_err(torch.from_numpy(got), ref) <= 1e-4, r.code
        got16 = onnxruntime_logits(str(out / r.files["onnx_fp16"]), x)
        assert rel_err(torch.from_numpy(got16), ref) <= 2e-2, r.code


def test_graph_has_no_batchnorm_and_shrinks_when_a_stage_is_skipped(exported) -> None:
    out, _ = exported
    nodes = {}
    for code in subnet.all_codes(4):
        g = load(out, code)
        ops = [n.op_type for n in g.graph.node]
        assert "BatchNormalization" not in ops and "If" not in ops
        nodes[code] = len(ops)
    for code in subnet.all_codes(4):
        for k, c in enumerate(code):
            if c == "1":
                fewer = code[:k] + "0" + code[k + 1:]
                assert nodes[fewer] < nodes[code], (code, fewer)


def test_metadata_and_io_follow_the_contract(exported) -> None:
    out, _ = exported
    g = load(out, "0110")
    meta = {p.key: p.value for p in g.metadata_props}
    assert meta["adn.arch"] == ARCH and meta["adn.subnet"] == "0110" and meta["adn.skip_cfg"] == "TFFT"
    assert float(meta["adn.gflops"]) > 0 and int(meta["adn.params"]) > 0
    assert meta["adn.source_sha256"] == "abc" and meta["adn.version"]
    (inp,), (outp,) = g.graph.input, g.graph.output
    assert inp.name == "input" and outp.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic N
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    g16 = load(out, "0110", ".fp16")
    assert g16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in g16.graph.initializer)


def test_initializer_names_are_stable_across_subnets(exported) -> None:
    out, _ = exported
    seen: dict[str, bytes] = {}
    for code in subnet.all_codes(4):
        for init in load(out, code).graph.initializer:
            data = numpy_helper.to_array(init).tobytes()
            assert seen.setdefault(init.name, data) == data, (code, init.name)
    # Mandatory convs exist in both skip-states, under different names.
    assert "layer2.0.conv1.weight" in seen and "layer2.0.conv1.weight.skip" in seen
    assert seen["layer2.0.conv1.weight"] != seen["layer2.0.conv1.weight.skip"]
    # Skippable blocks and twin-less layers have one version only.
    assert "layer2.1.conv1.weight" in seen and "layer2.1.conv1.weight.skip" not in seen
    assert "fc.weight" in seen and "conv1.weight.skip" not in seen
    # Identical tensors in different graphs share a name (the super-net's stem in the base-net).
    super_names = {i.name for i in load(out, "1111").graph.initializer}
    base_names = {i.name for i in load(out, "0000").graph.initializer}
    assert {"conv1.weight", "fc.weight", "layer1.0.downsample.0.weight"} & super_names & base_names or \
        {"conv1.weight", "fc.weight"} <= super_names & base_names


def test_manifest_records_files_hashes_costs_and_parity(exported) -> None:
    out, results = exported
    data = manifest.load(out)
    assert data["arch"] == ARCH and data["num_stages"] == 4 and data["num_classes"] == 10
    assert data["input"]["shape"] == [None, 3, 32, 32] and data["input"]["mean"] == [0.5, 0.5, 0.5]
    assert data["input"]["resize"] == 32  # our small models: no crop margin
    assert set(data["subnets"]) == set(subnet.all_codes(4))
    e = data["subnets"]["1010"]
    assert e["skip_cfg"] == "FTFT" and e["gmacs"] > 0 and e["params"] > 0
    for rec in e["files"].values():
        manifest.verify_file(out, rec)
    assert e["parity"]["onnx"]["rel_err"] <= 1e-4 and e["parity"]["onnx_fp16"]["rel_err"] <= 2e-2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_static_batch_option(model, tmp_path) -> None:
    export(model, tmp_path, ["base"], options=ExportOptions(dynamic_batch=False, batch=4))
    g = onnx.load(str(tmp_path / f"{ARCH}_0000.onnx"))
    assert [d.dim_value for d in g.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 32, 32]
    assert json.loads((tmp_path / "manifest.json").read_text())["input"]["shape"] == [4, 3, 32, 32]


def test_parity_failure_writes_nothing(model, tmp_path, monkeypatch) -> None:
    """A graph that disagrees with PyTorch is never written (exit 1 path)."""
    import adn_edge.export.exporter as ex

    monkeypatch.setattr(ex, "onnxruntime_logits", lambda data, x: np.zeros((x.shape[0], 10), np.float32))
    with pytest.raises(ParityError):
        Exporter(model, tmp_path, {"sha256": "s"}).export(["1111"])
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tmp"))


def test_official_models_record_the_official_eval_resize() -> None:
    """ImageNet evaluation: shorter side 256, centre crop 224 (docs/official-format.md 1.4)."""
    from adn_edge.models import get_spec
    from adn_edge.train.data import preprocess_for_arch

    assert get_spec("resnet50").eval_resize() == 256 and get_spec("swin_t").eval_resize() == 256
    assert preprocess_for_arch("resnet50").resize == 256 and preprocess_for_arch("resnet_tiny").resize == 32


def test_manifest_records_the_arch_resampling(tmp_path) -> None:
    """Swin-T's evaluation resize is bicubic (docs/official-format.md 1.4); calibration and `eval` of
    the exported directory read it from the manifest."""
    from adn_edge.modeldir import manifest
    from adn_edge.modeldir.preprocess import Preprocess as CalibPreprocess
    from adn_edge.models import create_model
    from adn_edge.train.evaluate import preprocess_for_directory

    exp = Exporter(create_model("swin_t"), tmp_path / "swin", {"sha256": "s"})
    assert exp.manifest["input"]["interpolation"] == "bicubic"
    manifest.save(exp.out_dir, exp.manifest)
    assert preprocess_for_directory(exp.out_dir).interpolation == "bicubic"
    assert CalibPreprocess.from_manifest(exp.manifest["input"]).interpolation == "bicubic"
