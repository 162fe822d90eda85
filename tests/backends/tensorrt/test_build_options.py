"""Build options: validation before TensorRT is touched, profile shapes, the record."""

from __future__ import annotations

import pytest

from adn_edge.backends.tensorrt.options import (
    DEFAULT_MAX_BATCH, BuildOptions, make_options, normalise_precision, profile_shapes, resolve_batches,
    static_batch,
)
from adn_edge.errors import AdnError

DYNAMIC = {"name": "input", "shape": [None, 3, 224, 224]}


@pytest.mark.parametrize("given,want", [("fp16", "fp16"), ("FP32", "fp32"), (" int8 ", "int8"), ("Best", "best")])
def test_precision_normalised(given: str, want: str) -> None:
    assert normalise_precision(given) == want


@pytest.mark.parametrize("bad", ["fp64", "half", "", "tf32"])
def test_bad_precision_names_the_choices(bad: str) -> None:
    with pytest.raises(AdnError) as e:
        normalise_precision(bad)
    assert "fp16" in e.value.message and "fp32" in e.value.message and e.value.hint


def test_dynamic_batch_defaults() -> None:
    assert resolve_batches(None, None, None, None) == (1, 1, DEFAULT_MAX_BATCH)
    assert resolve_batches(None, 2, None, None) == (2, 2, DEFAULT_MAX_BATCH)
    assert resolve_batches(None, None, 16, None) == (1, 16, 16)
    assert resolve_batches(None, 1, 4, 32) == (1, 4, 32)


@pytest.mark.parametrize("lo,opt,hi", [(4, 2, 8), (1, 9, 8), (8, 8, 4)])
def test_batch_order_enforced(lo: int, opt: int, hi: int) -> None:
    with pytest.raises(AdnError, match="min <= opt <= max"):
        resolve_batches(None, lo, opt, hi)


@pytest.mark.parametrize("flag,kwargs", [("--min-batch", {"min_batch": 0}), ("--max-batch", {"max_batch": -3}),
                                         ("--opt-batch", {"opt_batch": 1.5})])
def test_batch_values_checked(flag: str, kwargs: dict) -> None:
    args = {"min_batch": None, "opt_batch": None, "max_batch": None, **kwargs}
    with pytest.raises(AdnError, match=flag):
        resolve_batches(None, args["min_batch"], args["opt_batch"], args["max_batch"])


def test_max_batch_limit() -> None:
    with pytest.raises(AdnError, match="larger than"):
        resolve_batches(None, None, None, 100_000)


def test_static_batch_admits_only_itself() -> None:
    assert resolve_batches(4, None, None, None) == (4, 4, 4)
    assert resolve_batches(4, 4, 4, 4) == (4, 4, 4)
    with pytest.raises(AdnError, match="static batch of 4") as e:
        resolve_batches(4, None, None, 8)
    assert "--max-batch 8" in e.value.message


@pytest.mark.parametrize("n,want", [(None, None), (-1, None), (0, None), (1, 1), (8, 8)])
def test_static_batch_read_from_manifest(n: int | None, want: int | None) -> None:
    assert static_batch({"shape": [n, 3, 8, 8]}) == want


def test_damaged_shape_rejected() -> None:
    with pytest.raises(AdnError, match="NCHW"):
        static_batch({"shape": [3, 224, 224]})
    with pytest.raises(AdnError, match="batch dimension"):
        static_batch({"shape": ["N", 3, 8, 8]})


def test_make_options_validates_everything() -> None:
    opts = make_options(DYNAMIC, "FP16", max_batch=4, workspace_mb=512, opt_level=5)
    assert opts == BuildOptions("fp16", 1, 1, 4, 512, 5)
    with pytest.raises(AdnError, match="--opt-level"):
        make_options(DYNAMIC, opt_level=6)
    with pytest.raises(AdnError, match="--opt-level"):
        make_options(DYNAMIC, opt_level=True)  # type: ignore[arg-type]
    with pytest.raises(AdnError, match="--workspace-mb"):
        make_options(DYNAMIC, workspace_mb=0)


def test_record_holds_what_changes_the_engine() -> None:
    fp16 = make_options(DYNAMIC, "fp16")
    rec = fp16.record()
    assert rec == {"precision": "fp16", "min_batch": 1, "opt_batch": 1, "max_batch": DEFAULT_MAX_BATCH,
                   "workspace_mb": 1024, "opt_level": 3}
    # the calibration batch only matters where a calibrator runs
    assert "calib_batch" in make_options(DYNAMIC, "int8").record()
    assert make_options(DYNAMIC, "fp16", calib_batch=4).record() == rec


def test_profile_shapes_vary_only_the_batch() -> None:
    p = profile_shapes(DYNAMIC, make_options(DYNAMIC, min_batch=1, opt_batch=2, max_batch=16))
    assert p.input_name == "input"
    assert (p.min, p.opt, p.max) == ((1, 3, 224, 224), (2, 3, 224, 224), (16, 3, 224, 224))
    assert p.as_record() == {"min": [1, 3, 224, 224], "opt": [2, 3, 224, 224], "max": [16, 3, 224, 224]}


def test_profile_needs_fixed_image_size() -> None:
    spec = {"name": "input", "shape": [None, 3, None, None]}
    with pytest.raises(AdnError, match="fixed"):
        profile_shapes(spec, BuildOptions())


def test_static_graph_calibrates_with_its_batch() -> None:
    assert make_options({"name": "input", "shape": [2, 3, 8, 8]}, "int8", calib_batch=8).calib_batch == 2
