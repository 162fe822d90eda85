"""EngineSwitcher against the ADN model's own forward, and its error paths.

Every backend available here must give the reference logits of whichever
sub-network is active, after any sequence of switches in any spelling.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher, available_backends
from tests.runtime._helpers import CODES, TOL, rel_err

BACKENDS = [("onnxruntime", False), ("onnxruntime", True), ("torch", False)]
IDS = ["onnxruntime", "onnxruntime-segmented", "torch"]


def open_backend(model_dir, tiny_model, backend: str, segmented: bool, **kw) -> EngineSwitcher:
    if backend == "torch":
        kw.setdefault("model", tiny_model)
    else:
        kw.setdefault("threads", 1)
    return EngineSwitcher.open(model_dir, backend=backend, segmented=segmented, **kw)


def spellings(code: str) -> list[str]:
    out = [code, subnet.to_skip_cfg(code), subnet.to_skip_cfg(code).lower()]
    if code == "1111":
        out.append("super")
    if code == "0000":
        out.append("BASE")
    return out


@pytest.mark.parametrize(("backend", "segmented"), BACKENDS, ids=IDS)
def test_matches_reference_after_random_switches(model_dir, tiny_model, inputs, references, backend, segmented):
    rng = random.Random(f"{backend}{segmented}")
    with open_backend(model_dir, tiny_model, backend, segmented) as sw:
        assert sorted(sw.codes) == sorted(CODES)
        assert sw.active == "1111"  # 'all' puts the super-net first
        seen = set()
        for step in range(48):
            code = CODES[step % 16] if step < 16 else rng.choice(CODES)  # every code, then at random
            canon = sw.switch(rng.choice(spellings(code)))
            assert canon == code and sw.active == code
            i = rng.randrange(len(inputs))
            out = sw.infer(inputs[i])
            assert out.dtype == np.float32 and out.shape == references[code][i].shape
            assert rel_err(out, references[code][i]) <= TOL, (code, i)
            seen.add(code)
        assert seen == set(CODES)
        # a one-off code for one call, without switching
        out = sw.infer(inputs[0], subnet="0101")
        assert rel_err(out, references["0101"][0]) <= TOL
        assert sw.active == canon


def test_sub_networks_really_differ(references):
    """Guards the comparisons above against passing vacuously."""
    assert rel_err(references["1111"][0], references["0000"][0]) > 1e-2
    assert rel_err(references["1110"][0], references["1111"][0]) > 1e-3


def test_auto_picks_onnxruntime_here(model_dir, inputs, references):
    assert available_backends()[0] == "onnxruntime"
    with EngineSwitcher.open(model_dir, subnets=["TFFF", "1111"], threads=1, segmented=False) as sw:
        assert sw.backend_name == "onnxruntime"
        assert sw.codes == ("0111", "1111") and sw.active == "0111"
        assert rel_err(sw.infer(inputs[1]), references["0111"][1]) <= TOL


def test_using_restores_previous(model_dir, inputs, references):
    with EngineSwitcher.open(model_dir, subnets="all", threads=1) as sw:
        sw.switch("1010")
        with sw.using("base") as code:
            assert code == "0000" and sw.active == "0000"
            assert rel_err(sw.infer(inputs[0]), references["0000"][0]) <= TOL
        assert sw.active == "1010"
        with pytest.raises(RuntimeError), sw.using("0101"):
            raise RuntimeError("boom")
        assert sw.active == "1010"


def test_failed_switch_leaves_previous_serving(model_dir, inputs, references):
    with EngineSwitcher.open(model_dir, subnets=["1111", "1010"], threads=1) as sw:
        sw.switch("1010")
        for bad in ("10101", "xyz", "", "all", 1010, None):
            with pytest.raises(AdnError):
                sw.switch(bad)  # type: ignore[arg-type]
            assert sw.active == "1010"
        with pytest.raises(AdnError, match=r"0101 is not open in this switcher \(open: 1111, 1010\)"):
            sw.switch("0101")
        assert sw.active == "1010"
        assert rel_err(sw.infer(inputs[2]), references["1010"][2]) <= TOL
        with pytest.raises(AdnError, match="not open"):
            sw.infer(inputs[0], subnet="0000")


def test_bad_code_message_names_model_and_examples(model_dir):
    with EngineSwitcher.open(model_dir, subnets="1111", threads=1) as sw, pytest.raises(AdnError) as err:
        sw.switch("11")
    msg = str(err.value)
    assert "resnet_tiny has 4 skippable stages" in msg and "Valid examples" in msg


@pytest.mark.parametrize(("batch", "match"), [
    (np.zeros((1, 3, 32, 32), np.float64), "float32"),
    (np.zeros((1, 3, 32, 32), np.int64), "float32"),
    (np.zeros((3, 32, 32), np.float32), r"shape \(3, 32, 32\).*\(N, 3, 32, 32\)"),
    (np.zeros((1, 32, 32, 3), np.float32), r"shape \(1, 32, 32, 3\)"),
    (np.zeros((1, 3, 64, 64), np.float32), r"shape \(1, 3, 64, 64\)"),
    (np.zeros((0, 3, 32, 32), np.float32), r"shape \(0, 3, 32, 32\)"),
    ([[0.0]], "numpy array"),
])
def test_infer_rejects_bad_input(model_dir, batch, match):
    with EngineSwitcher.open(model_dir, subnets="1111", threads=1) as sw:
        with pytest.raises(AdnError, match=match):
            sw.infer(batch)
        assert sw.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)  # still serving


def test_non_contiguous_input_is_accepted(model_dir, inputs, references):
    x = np.ascontiguousarray(inputs[4].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # NCHW view of NHWC memory
    assert not x.flags.c_contiguous
    with EngineSwitcher.open(model_dir, subnets="1111", threads=1) as sw:
        assert rel_err(sw.infer(x), references["1111"][4]) <= TOL


@pytest.mark.parametrize(("backend", "segmented"), BACKENDS, ids=IDS)
def test_closed_switcher_refuses_clearly(model_dir, tiny_model, inputs, backend, segmented):
    sw = open_backend(model_dir, tiny_model, backend, segmented, subnets=["1111", "0000"])
    with sw:
        sw.infer(inputs[0])
    assert sw.closed
    for call in (lambda: sw.infer(inputs[0]), lambda: sw.switch("0000"), lambda: sw.engine):
        with pytest.raises(AdnError, match="closed"):
            call()
    sw.close()  # idempotent
    assert sw.describe()["closed"] is True


def test_describe(model_dir):
    with EngineSwitcher.open(model_dir, subnets=["1111", "0000"], threads=1, segmented=False) as sw:
        d = sw.describe()
    assert d["arch"] == "resnet_tiny" and d["backend"] == "onnxruntime" and d["subnets"] == ["1111", "0000"]
    assert d["input"]["shape"] == [None, 3, 32, 32] and d["input"]["mean"] == [0.5, 0.5, 0.5]
    eng = d["engine"]
    assert eng["shared_weights"] and eng["shared_arena"] and eng["graph_optimization"] == "extended"
    assert eng["sharing"]["bytes_unique"] < eng["sharing"]["bytes_referenced"]
    assert "EngineSwitcher(resnet_tiny, backend=onnxruntime, 2 sub-networks" in repr(sw)


def test_backend_selection_errors(model_dir, tiny_model):
    with pytest.raises(AdnError, match="Unknown backend 'nope'"):
        EngineSwitcher.open(model_dir, backend="nope")
    with pytest.raises(AdnError, match="torch backend has no segmented mode"):
        EngineSwitcher.open(model_dir, backend="torch", segmented=True, model=tiny_model)
    with pytest.raises(AdnError, match="has no option 'thread'"):
        EngineSwitcher.open(model_dir, backend="onnxruntime", thread=2)
    with pytest.raises(AdnError, match="has no 'onnx_fp16' graph"):
        EngineSwitcher.open(model_dir, backend="onnxruntime", precision="fp16")
    with pytest.raises(AdnError, match="graph_optimization must be one of"):
        EngineSwitcher.open(model_dir, backend="onnxruntime", graph_optimization="max")
    with pytest.raises(AdnError, match="no CUDA execution provider"):
        EngineSwitcher.open(model_dir, backend="onnxruntime", device="cuda")


def test_torch_backend_loads_recorded_checkpoint(tmp_path, tiny_model, inputs, references):
    """Without an in-memory model, the torch backend loads the checkpoint the manifest
    names, and refuses one whose bytes changed since export."""
    from adn_edge import checkpoint
    from adn_edge.export import export

    ckpt = checkpoint.save(tiny_model, tmp_path / "tiny.safetensors")
    src = checkpoint.read(ckpt).source_record()
    d = tmp_path / "dir"
    export(tiny_model, d, ["1111", "0000"], source=src)
    with EngineSwitcher.open(d, backend="torch", subnets="all") as sw:
        assert sw.codes == ("1111", "0000")
        assert rel_err(sw.infer(inputs[1], subnet="0000"), references["0000"][1]) <= TOL
        tensors = sw.describe()["engine"]["tensors"]
        assert tensors["bytes_unique"] < tensors["bytes_referenced"]
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1
    ckpt.write_bytes(bytes(data))
    with pytest.raises(AdnError, match="does not match the sha256 recorded in the manifest"):
        EngineSwitcher.open(d, backend="torch")


def test_default_mode_is_segmented_on_the_cpu_when_the_directory_has_segments(model_dir, inputs):
    """The measured rule (benchmarks/bench_cpu_modes.py): segments at full optimisation on
    ONNX Runtime's CPU provider; monolithic wherever segments would be another model or
    were not measured to win."""
    from adn_edge.modeldir import manifest
    from adn_edge.runtime.switcher import default_segmented

    with EngineSwitcher.open(model_dir, threads=1) as sw, \
            EngineSwitcher.open(model_dir, threads=1, segmented=False) as mono:
        d = sw.describe()
        assert sw.segmented and sw.backend_name == "onnxruntime-segmented"
        assert "CPU" in d["mode_reason"]
        assert d["engine"]["graph_optimization"] == "all" and d["engine"]["spinning"] is False
        assert mono.describe()["mode_reason"] == "asked for" and not mono.segmented
        for code in ("1111", "0110", "0000"):
            assert rel_err(sw.infer(inputs[4], code), mono.infer(inputs[4], code)) <= 1e-4
    m = manifest.load(model_dir)
    assert default_segmented(m, "auto", None, "cpu")[0]
    recal = dict(m, recalibration={"data": "builtin", "samples": 64})
    ok, why = default_segmented(recal, "auto", None, "cpu")
    assert not ok and "recalibrated" in why
    assert not default_segmented(m, "auto", "fp16", "cpu")[0]
    assert not default_segmented(m, "torch", None, "cpu")[0]
    no_seg = {k: v for k, v in m.items() if k != "segments"}
    assert default_segmented(no_seg, "auto", None, None) == (False, "no segment graphs in this directory")
