"""ONNX Runtime backend: the sharing is measured, not assumed; the graph reader is exact."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from adn_edge.runtime import EngineSwitcher
from adn_edge.backends.onnxruntime.runner import onnx_initializers
from tests.runtime._helpers import TOL, rel_err


def test_every_session_reads_the_shared_buffers(model_dir):
    with EngineSwitcher.open(model_dir, threads=1, check_sharing=True) as sw:
        probe = sw.describe()["engine"]["sharing_probe"]
        sharing = sw.describe()["engine"]["sharing"]
    assert probe["ok"] and probe["sessions_checked"] == 16
    assert set(probe["tensors"]) == {"conv1.weight", "fc.bias"}
    assert all(t["reading_shared_buffer"] == 16 and t["restored"] for t in probe["tensors"].values())
    # 16 graphs reference ~8x the bytes that exist once: every tensor per stage skip-state
    assert sharing["bytes_referenced"] > 6 * sharing["bytes_unique"]
    assert sharing["conflicts"] == []


def test_probe_catches_sessions_that_copy_weights(model_dir):
    """'all' optimisation reorders conv weights into per-session copies (NCHWc): the
    probe must see it (this is why 'extended' is the default)."""
    with EngineSwitcher.open(model_dir, subnets=["1111", "0000"], threads=1, graph_optimization="all") as sw:
        probe = sw.engine.verify_sharing()
    assert not probe["ok"]
    assert probe["tensors"]["conv1.weight"]["copies"] == ["0000", "1111"]
    assert probe["tensors"]["fc.bias"]["reading_shared_buffer"] == 2


def test_options_change_sharing_and_threads(model_dir, inputs, references):
    with EngineSwitcher.open(model_dir, subnets=["1111", "0110"], share_weights=False, share_arena=False,
                             prepack=True, threads=1) as sw:
        d = sw.describe()["engine"]
        assert not d["shared_weights"] and not d["shared_arena"] and d["sharing"]["tensors_unique"] == 0
        assert not sw.engine.verify_sharing()["ok"]
        assert rel_err(sw.infer(inputs[3], "0110"), references["0110"][3]) <= TOL


def test_global_thread_pool(model_dir, inputs, references, tmp_path):
    """In a subprocess: ONNX Runtime's global pool, once created, binds every later session
    of the process, which must not leak into the other tests."""
    import subprocess
    import sys

    from tests._util import REPO

    np.save(tmp_path / "x.npy", inputs[3])
    script = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "from adn_edge.runtime import EngineSwitcher\n"
        "x = np.load(sys.argv[2])\n"
        "with EngineSwitcher.open(sys.argv[1], subnets=['0110'], thread_pool='global', threads=1) as a:\n"
        "    assert a.describe()['engine']['thread_pool'] == 'global'\n"
        "    ya = a.infer(x)\n"
        "with EngineSwitcher.open(sys.argv[1], subnets=['0110'], threads=2) as b:  # must follow the pool\n"
        "    d = b.describe()['engine']\n"
        "    assert d['thread_pool'] == 'global' and d['notes'], d\n"
        "    assert np.array_equal(b.infer(x), ya)\n"
        "np.save(sys.argv[2], ya)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(model_dir), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rel_err(np.load(tmp_path / "x.npy"), references["0110"][3]) <= TOL


def test_reader_matches_onnx_on_exported_graph(model_dir):
    data = (model_dir / "resnet_tiny_1010.onnx").read_bytes()
    ours = {i.name: i.array for i in onnx_initializers(data)}
    theirs = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(data).graph.initializer}
    assert ours.keys() == theirs.keys()
    for name, arr in theirs.items():
        assert ours[name].dtype == arr.dtype and ours[name].shape == arr.shape
        assert np.array_equal(ours[name], arr), name


def test_reader_handles_typed_fields_and_skips_external():
    """Graphs written by other tools store small tensors in typed fields, not raw_data."""
    rng = np.random.default_rng(0)
    tensors = [
        helper.make_tensor("f", onnx.TensorProto.FLOAT, [2, 3], rng.standard_normal(6).tolist(), raw=False),
        helper.make_tensor("i64", onnx.TensorProto.INT64, [3], [-1, 0, 2**40], raw=False),
        helper.make_tensor("i32", onnx.TensorProto.INT32, [2], [-7, 9], raw=False),
        helper.make_tensor("d", onnx.TensorProto.DOUBLE, [2], [1.5, -2.25], raw=False),
        helper.make_tensor("h", onnx.TensorProto.FLOAT16, [2], np.array([1, 2], np.float16).tobytes(), raw=True),
        helper.make_tensor("scalar", onnx.TensorProto.FLOAT, [], [3.0], raw=False),
    ]
    ext = helper.make_tensor("ext", onnx.TensorProto.FLOAT, [1], [0.0])
    ext.ClearField("float_data")
    ext.data_location = onnx.TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="w.bin")
    graph = helper.make_graph([], "g", [], [], initializer=[*tensors, ext])
    data = helper.make_model(graph).SerializeToString()
    ours = {i.name: i.array for i in onnx_initializers(data)}
    assert "ext" not in ours
    for t in tensors:
        ref = numpy_helper.to_array(t)
        assert ours[t.name].dtype == ref.dtype and ours[t.name].shape == ref.shape, t.name
        assert np.array_equal(ours[t.name], ref), t.name


def test_same_name_different_bytes_is_not_shared(model_dir, tmp_path):
    """If a graph broke the naming contract, the backend must keep it correct (unshared)."""
    import shutil

    from adn_edge.modeldir import manifest
    from adn_edge.export.parity import onnxruntime_logits

    d = tmp_path / "d"
    shutil.copytree(model_dir, d, ignore=shutil.ignore_patterns("*seg*"))
    g = onnx.load(d / "resnet_tiny_0000.onnx")
    for init in g.graph.initializer:
        if init.name == "fc.bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, "fc.bias"))
    onnx.save(g, d / "resnet_tiny_0000.onnx")
    m = manifest.load(d)
    m["subnets"]["0000"]["files"]["onnx"] = manifest.file_record(d, "resnet_tiny_0000.onnx")
    manifest.save(d, m)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with EngineSwitcher.open(d, subnets=["1111", "0000"], threads=1) as sw:
        assert sw.describe()["engine"]["sharing"]["conflicts"] == ["fc.bias"]
        want = onnxruntime_logits(str(d / "resnet_tiny_0000.onnx"), x)
        assert rel_err(sw.infer(x, "0000"), want) <= TOL
        want = onnxruntime_logits(str(d / "resnet_tiny_1111.onnx"), x)
        assert rel_err(sw.infer(x, "1111"), want) <= TOL


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch(model_dir, batch, tiny_model):
    import torch

    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x), skip=[False, True, False, True]).numpy()
    with EngineSwitcher.open(model_dir, subnets="1010", threads=1) as sw:
        assert rel_err(sw.infer(x), ref) <= TOL
