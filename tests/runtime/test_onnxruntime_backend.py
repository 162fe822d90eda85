"""ONNX Runtime backend: the sharing is measured, not assumed; the graph reader is exact."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from adn_edge.backends.onnxruntime.initializers import onnx_initializers
from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher
from tests.runtime._helpers import TOL, rel_err


def test_every_session_reads_the_shared_buffers(model_dir):
    with EngineSwitcher.open(model_dir, threads=1, check_sharing=True, segmented=False) as sw:
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
    with EngineSwitcher.open(model_dir, subnets=["1111", "0000"], threads=1, graph_optimization="all",
                            segmented=False) as sw:
        probe = sw.engine.verify_sharing()
    assert not probe["ok"]
    assert probe["tensors"]["conv1.weight"]["copies"] == ["0000", "1111"]
    assert probe["tensors"]["fc.bias"]["reading_shared_buffer"] == 2


def test_options_change_sharing_and_threads(model_dir, inputs, references):
    with EngineSwitcher.open(model_dir, subnets=["1111", "0110"], share_weights=False, share_arena=False,
                             prepack=True, threads=1, segmented=False) as sw:
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


def _read(data: bytes) -> dict[str, np.ndarray]:
    return {i.name: i.array for i in onnx_initializers(data)}


def _assert_same_as_onnx(data: bytes, skipped: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every initializer but ``skipped``, read as onnx.numpy_helper.to_array reads it:
    same names in the same order, dtypes, shapes and bytes (bit for bit, NaN or not)."""
    ours = _read(data)
    theirs = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer
              if t.name not in skipped}
    assert list(ours) == list(theirs)
    for name, ref in theirs.items():
        got = ours[name]
        assert got.dtype == ref.dtype and got.shape == ref.shape, (name, got.dtype, got.shape, ref.dtype, ref.shape)
        assert got.tobytes() == ref.tobytes(), name
    return ours


def _graph_bytes(tensors: Sequence[onnx.TensorProto]) -> bytes:
    return helper.make_model(helper.make_graph([], "g", [], [], initializer=list(tensors))).SerializeToString()


def test_reader_matches_onnx_on_exported_graph(model_dir):
    data = (model_dir / "resnet_tiny_1010.onnx").read_bytes()
    ours = _assert_same_as_onnx(data)
    assert "conv1.weight" in ours and "fc.bias" in ours


_RNG = np.random.default_rng(0)
_VALUES = {  # element type -> values covering its range (negative, large, special)
    onnx.TensorProto.FLOAT: np.array([[0.5, -1.25, 3e38], [-0.0, np.inf, np.nan]], np.float32),
    onnx.TensorProto.FLOAT16: np.array([[1.5, -2.0, 65504.0], [0.0, -0.0, 6e-8]], np.float16),
    onnx.TensorProto.DOUBLE: np.array([1.5, -2.25, 1e300], np.float64),
    onnx.TensorProto.INT8: np.array([[-128, -1, 0], [1, 64, 127]], np.int8),
    onnx.TensorProto.UINT8: np.array([0, 1, 128, 255], np.uint8),
    onnx.TensorProto.INT16: np.array([-32768, 7, 32767], np.int16),
    onnx.TensorProto.UINT16: np.array([0, 7, 65535], np.uint16),
    onnx.TensorProto.INT32: np.array([-(2**31), -7, 9, 2**31 - 1], np.int32),
    onnx.TensorProto.INT64: np.array([-(2**63), -1, 0, 2**40, 2**63 - 1], np.int64),
    onnx.TensorProto.UINT32: np.array([0, 2**32 - 1], np.uint32),
    onnx.TensorProto.UINT64: np.array([0, 2**63 + 5, 2**64 - 1], np.uint64),
    onnx.TensorProto.BOOL: np.array([True, False, True], np.bool_),
}


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_field"])
@pytest.mark.parametrize("elem", list(_VALUES), ids=[onnx.TensorProto.DataType.Name(e) for e in _VALUES])
def test_reader_matches_onnx_for_each_type_and_storage(elem, raw):
    """raw_data is what the exporter writes; other tools keep small tensors in the typed
    fields (float_data, int32_data for int8/uint8/float16/bool, int64_data, ...)."""
    values = _VALUES[elem]
    t = helper.make_tensor("t", elem, values.shape, values.tobytes() if raw else values.flatten().tolist(), raw=raw)
    assert t.HasField("raw_data") == raw
    ours = _assert_same_as_onnx(_graph_bytes([t]))
    np.testing.assert_array_equal(ours["t"], values)


def test_reader_scalars_empty_and_mixed_storage_in_one_graph():
    f32 = _RNG.standard_normal((4, 3, 2, 2)).astype(np.float32)
    tensors = [
        numpy_helper.from_array(f32, "conv.weight"),  # raw
        helper.make_tensor("conv.bias", onnx.TensorProto.FLOAT, [4], [0.5, -1.0, 2.0, 0.0], raw=False),
        helper.make_tensor("scalar_f", onnx.TensorProto.FLOAT, [], [3.0], raw=False),
        helper.make_tensor("scalar_raw", onnx.TensorProto.INT64, [], np.int64(-5).tobytes(), raw=True),
        helper.make_tensor("shape", onnx.TensorProto.INT64, [3], [-1, 0, 2**40], raw=False),
        helper.make_tensor("empty", onnx.TensorProto.FLOAT, [0, 3], [], raw=False),
        numpy_helper.from_array(np.zeros((2, 0), np.int32), "empty_raw"),
    ]
    ours = _assert_same_as_onnx(_graph_bytes(tensors))
    assert ours["scalar_f"].shape == () and ours["scalar_raw"] == -5 and ours["empty"].shape == (0, 3)
    np.testing.assert_array_equal(ours["conv.weight"], f32)


def test_reader_leaves_out_what_it_cannot_share():
    """External data (never loaded), strings and types numpy cannot hand ONNX Runtime stay
    unshared: their graph keeps its own copy."""
    ext = helper.make_tensor("ext", onnx.TensorProto.FLOAT, [1], [0.0])
    ext.ClearField("float_data")
    ext.data_location = onnx.TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="does-not-exist.bin")
    tensors = [
        helper.make_tensor("keep", onnx.TensorProto.FLOAT, [1], [1.0]),
        ext,
        helper.make_tensor("s", onnx.TensorProto.STRING, [1], [b"x"]),
        helper.make_tensor("bf16", onnx.TensorProto.BFLOAT16, [2], [1.0, 2.0]),
        helper.make_tensor("", onnx.TensorProto.FLOAT, [1], [1.0]),
    ]
    assert list(_read(_graph_bytes(tensors))) == ["keep"]


def test_reader_on_a_qdq_int8_graph(model_dir, tmp_path):
    """A Q/DQ graph as `adn-edge quantize` writes them (ONNX Runtime's static quantizer):
    int8 weights, int32 biases, float scales, scalar zero points, all shared, and a
    session built on the shared tensors computes what a plain session computes."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from adn_edge.backends.onnxruntime.sessions import SessionFactory

    batches = [{"input": _RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out = tmp_path / "q.onnx"
    quantize_static(str(model_dir / "resnet_tiny_1010.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    data = out.read_bytes()
    ours = _assert_same_as_onnx(data)
    kinds = {a.dtype for a in ours.values()}
    assert {np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.float32)} <= kinds
    assert any(a.shape == () for a in ours.values())  # scalar zero points / scales

    factory = SessionFactory(device="cpu", threads=1, prepack=True)
    sess, names = factory.session(data, "q.onnx")
    assert set(names) == set(ours)
    plain = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = batches[0]["input"]
    np.testing.assert_array_equal(sess.run(None, {"input": x})[0], plain.run(None, {"input": x})[0])
    factory.shared.close()


def test_reader_refuses_truncated_and_damaged_graphs(model_dir):
    data = (model_dir / "resnet_tiny_1010.onnx").read_bytes()
    biggest = max(onnx.load_from_string(data).graph.initializer, key=lambda t: len(t.raw_data))
    inside = data.index(biggest.raw_data) + len(biggest.raw_data) // 2
    for cut in (inside, len(data) - 1, 3):
        with pytest.raises(AdnError, match="not a readable ONNX graph \\(truncated or damaged\\?\\)"):
            _read(data[:cut])
    with pytest.raises(AdnError, match="not a readable ONNX graph"):
        _read(b"\xff" * 64)

    short = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    short.raw_data = short.raw_data[:12]
    with pytest.raises(AdnError, match="'w' holds 12 bytes, but 4 float32 values of shape \\[4\\] need 16"):
        _read(_graph_bytes([short]))
    typed = helper.make_tensor("t", onnx.TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0], raw=False)
    del typed.float_data[-1]
    with pytest.raises(AdnError, match="'t' does not hold its shape \\[2, 2\\]"):
        _read(_graph_bytes([typed]))
    negative = helper.make_tensor("n", onnx.TensorProto.FLOAT, [3], [1.0, 2.0, 3.0], raw=False)
    negative.dims[0] = -1  # reshape(-1) would accept it
    with pytest.raises(AdnError, match="'n' has a negative dimension \\[-1\\]"):
        _read(_graph_bytes([negative]))


def test_reader_on_every_prefix_of_a_graph():
    """Cut anywhere, a graph either reads as a clean AdnError or (cut between fields) as
    a prefix of its initializers, each intact: never a protobuf or numpy exception."""
    tensors = [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "a"),
               helper.make_tensor("b", onnx.TensorProto.INT64, [2], [-1, 2**40], raw=False),
               numpy_helper.from_array(np.array([1, -2], np.int8), "c")]
    data = _graph_bytes(tensors)
    full = _read(data)
    outcomes = set()
    for cut in range(len(data)):
        try:
            got = _read(data[:cut])
        except AdnError:
            outcomes.add("error")
            continue
        outcomes.add("prefix")
        assert list(got) == list(full)[:len(got)]
        for name, arr in got.items():
            assert arr.dtype == full[name].dtype and np.array_equal(arr, full[name])
    assert outcomes == {"error", "prefix"}


def test_runtime_without_onnx(model_dir):
    """onnx is imported when weights are shared, not with the runtime: without it the
    runtime imports, sharing fails with how to fix it, and share_weights=False opens."""
    import subprocess
    import sys

    from tests._util import REPO

    script = (
        "import sys\n"
        "sys.modules['onnx'] = None\n"
        "import adn_edge.runtime\n"
        "from adn_edge.runtime import EngineSwitcher\n"
        "from adn_edge.errors import AdnError\n"
        "try:\n"
        "    EngineSwitcher.open(sys.argv[1], subnets=['0110'], threads=1, segmented=False)\n"
        "    raise SystemExit('opened without onnx')\n"
        "except AdnError as exc:\n"
        "    assert 'pip install onnx' in str(exc) and 'share_weights=False' in str(exc), exc\n"
        "with EngineSwitcher.open(sys.argv[1], subnets=['0110'], threads=1, share_weights=False, segmented=False) as sw:\n"
        "    assert sw.infer(__import__('numpy').zeros((1, 3, 32, 32), 'float32')).shape[0] == 1\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(model_dir)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


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
    with EngineSwitcher.open(d, subnets=["1111", "0000"], threads=1, segmented=False) as sw:
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


# -- bounds: threads, batch size, the arena after an oversize batch ------------------------

THREADS_SCRIPT = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a pool of 100000 threads fails here, not the host
from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher
for threads in (100000, -1, 2.5):
    try:
        EngineSwitcher.open(sys.argv[1], subnets=["0110"], threads=threads).close()
        print("opened", threads, flush=True)
    except AdnError as exc:
        print("refused", threads, exc, flush=True)
"""


def test_thread_counts_beyond_the_machine_are_refused(model_dir):
    """In a child with an address-space limit: ONNX Runtime given threads=100000 tried to
    start them all (a segfault or the OOM killer), so it must be refused before."""
    import os
    import subprocess
    import sys

    from tests._util import REPO

    proc = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(model_dir)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 3, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert all(ln.startswith("refused") and "threads" in ln.split(" ", 2)[2] for ln in lines), lines
    assert str(os.cpu_count()) in lines[0]


@pytest.mark.parametrize("segmented", [False, True])
def test_a_batch_above_max_batch_runs_in_chunks(model_dir, inputs, references, segmented):
    with EngineSwitcher.open(model_dir, subnets=["0110", "1111"], threads=1, max_batch=2,
                             segmented=segmented) as sw:
        assert sw.describe()["engine"]["max_batch"] == 2
        for i in (4, 2, 0):  # batches 4, 3, 1: split into 2+2, 2+1, and not at all
            for code in ("0110", "1111"):
                out = sw.infer(inputs[i], code)
                assert out.shape == references[code][i].shape
                assert rel_err(out, references[code][i]) <= TOL, (i, code)


@pytest.mark.parametrize("segmented", [False, True])
def test_arena_shrinking_runs_give_the_same_logits(model_dir, inputs, references, segmented):
    """arena_shrink_above=1: batches above 1 are large (outputs in buffers of our own,
    chunked by max_batch=2), and each batch of 1 after them runs shrinking the arena
    (segmented: every hand-over in our buffers too); the logits must not notice."""
    with EngineSwitcher.open(model_dir, subnets=["0110"], threads=1, max_batch=2, arena_shrink_above=1,
                             segmented=segmented) as sw:
        assert sw.describe()["engine"]["arena_shrink"] == "cpu:0"
        for i in (4, 0, 2, 3, 0):  # batches 4, 1 (shrinks), 3, 1 (shrinks), 1
            assert rel_err(sw.infer(inputs[i]), references["0110"][i]) <= TOL, i


@pytest.mark.parametrize("options,needle", [({"max_batch": 0}, "max_batch"), ({"max_batch": True}, "max_batch"),
                                            ({"max_batch": "big"}, "max_batch"),
                                            ({"arena_shrink_above": -1}, "arena_shrink_above")])
def test_bad_batch_bounds_are_refused(model_dir, options, needle):
    with pytest.raises(AdnError, match=needle):
        EngineSwitcher.open(model_dir, subnets=["0110"], threads=1, **options)


ARENA_SCRIPT = r"""
import gc, json, sys
import numpy as np
from adn_edge.backends.onnxruntime.sessions import release_freed_heap
from adn_edge.runtime import EngineSwitcher
from adn_edge.runtime.backend import resident_bytes
options, then_small = json.loads(sys.argv[2]), sys.argv[3] == "1"
x = np.random.default_rng(0).standard_normal((2048, 3, 32, 32), dtype=np.float32)
small = np.zeros((1, 3, 32, 32), np.float32)
with EngineSwitcher.open(sys.argv[1], subnets=["1111"], threads=2, **options) as sw:
    sw.infer(small)
    opened = resident_bytes()
    kept = sw.infer(x)  # the caller keeps the logits of the big batch
    if then_small:
        sw.infer(small)  # the control loop goes on at batch 1 after the big batch
    after = resident_bytes()
gc.collect()
release_freed_heap()
print(json.dumps({"opened": opened, "after": after, "closed": resident_bytes()}))
"""


@pytest.mark.parametrize("options,then_small", [({}, True), ({"max_batch": 4096}, True),
                                                ({"max_batch": 4096, "segmented": True}, True),
                                                ({"max_batch": 4096}, False)],
                         ids=["chunked", "shrunk", "segmented", "at-close"])
def test_an_oversize_batch_does_not_keep_its_arena(model_dir, options, then_small):
    """In a fresh process (the arena is process-wide): a batch of 2048 on resnet_tiny
    grew ONNX Runtime's shared arena by ~400 MB that stayed after close(). Chunking
    (the default max_batch) bounds it, and the first batch-1 run after it (or close(),
    when none follows) gives it back, even while the caller holds the big logits."""
    import json
    import subprocess
    import sys

    from tests._util import REPO

    proc = subprocess.run([sys.executable, "-c", ARENA_SCRIPT, str(model_dir), json.dumps(options),
                           "1" if then_small else "0"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = {k: v / 2**20 for k, v in r.items()}
    if then_small:
        assert mb["after"] - mb["opened"] < 64, mb
    assert mb["closed"] - mb["opened"] < 64, mb
