"""Segments as one session (backends/onnxruntime/switch_graph.py): the CPU default for segments."""

from __future__ import annotations

import glob
import os
import tempfile
import threading

import numpy as np
import pytest

from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher
from tests.runtime._helpers import CODES, TOL, rel_err


def _leftovers() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "adn-edge-switch-graph-*"))


def test_one_session_is_the_cpu_default_and_equals_the_chain_and_pytorch(model_dir, inputs, references):
    before = set(_leftovers())
    with EngineSwitcher.open(model_dir, segmented=True, threads=2) as one, \
            EngineSwitcher.open(model_dir, segmented=True, threads=2, single_session=False) as chain:
        eng = one.describe()["engine"]
        assert eng["single_session"] is True and "one session" in eng["single_session_reason"]
        assert eng["segments"] == 8 and eng["graph_optimization"] == "all"
        assert chain.describe()["engine"]["single_session"] is False
        for code in CODES:
            for i, x in enumerate(inputs):  # batches of 1-4: the dynamic batch survives composition
                got = one.infer(x, code)
                np.testing.assert_array_equal(got, chain.infer(x, code))  # same kernels, same weights
                assert rel_err(got, references[code][i]) <= TOL, code
    assert set(_leftovers()) == before  # the optimised forms were temporary files


def test_switch_between_runs_changes_only_the_flags(model_dir, inputs, references):
    with EngineSwitcher.open(model_dir, segmented=True, threads=1) as sw:
        for code in ("1111", "0000", "1010", "1111"):
            sw.switch(code)
            assert rel_err(sw.infer(inputs[1]), references[code][1]) <= TOL


def test_concurrent_inference_on_one_session(model_dir, inputs, references):
    errors: list[str] = []
    with EngineSwitcher.open(model_dir, segmented=True, threads=1) as sw:
        def worker(code: str) -> None:
            for _ in range(5):
                if rel_err(sw.infer(inputs[3], code), references[code][3]) > TOL:
                    errors.append(code)

        threads = [threading.Thread(target=worker, args=(c,)) for c in ("1111", "0000", "0110", "1001")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_large_batches_go_through_own_buffers(model_dir, references):
    """Above arena_shrink_above the output lands in a buffer of ours, not one wrapping
    ONNX Runtime's arena (which the caller's copy would pin); small batches need not."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 32, 32), dtype=np.float32)
    with EngineSwitcher.open(model_dir, segmented=True, threads=1, arena_shrink_above=4, max_batch=8) as one, \
            EngineSwitcher.open(model_dir, segmented=False, threads=1) as mono:
        for code in ("1111", "0101"):
            got = one.infer(x, code)
            assert got.flags["OWNDATA"]
            assert rel_err(got, mono.infer(x, code)) <= TOL
        one.infer(x[:2], "1111")  # the first small run after a large one shrinks the arena (own buffer too)
        small = one.infer(x[:2], "1111")
        assert not small.flags["OWNDATA"]  # ONNX Runtime's own output: the check above can fail


def test_cases_that_need_the_chain_fall_back_or_refuse(model_dir):
    with EngineSwitcher.open(model_dir, segmented=True, threads=1, check_sharing=True) as sw:
        eng = sw.describe()["engine"]
        assert eng["single_session"] is False and "shared" in eng["single_session_reason"]
    with pytest.raises(AdnError, match="single_session=True cannot be honoured"):
        EngineSwitcher.open(model_dir, segmented=True, single_session=True, share_weights=True)


def test_a_tampered_segment_is_refused_before_composition(model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    victim = d / "resnet_tiny_seg2_skip.onnx"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = set(_leftovers())
    with pytest.raises(AdnError, match="sha256|does not match|changed"):
        EngineSwitcher.open(d, segmented=True, threads=1)
    assert set(_leftovers()) == before
