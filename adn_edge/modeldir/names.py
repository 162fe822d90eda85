"""Every file name inside a model directory, in one place (docs/model-directory.md).

Writers (export, quantize, build, bench, eval) and readers (runtime, policies,
``info``) build names only here, so a directory written by one command is found by
the others, and a change of naming is one edit. Every name starts with the
manifest's ``arch``; the pieces after it say what the file is of (a sub-network code
or a segment key such as ``seg2_skip``) and how it was made.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
EVAL = "eval.json"
EVAL_GLOB = "eval*.json"
BENCH_GLOB = "bench-*.json"
RANGES_SUFFIX = "ranges.json"
LOCK = ".adn-edge.lock"
RETIRED = ".retired"
"""Where a re-export with other weights moves the results of the old ones (never read)."""


def onnx_name(arch: str, code: str, variant: str = "") -> str:
    """``<arch>_<code>.onnx``, the float32 graph of one sub-network; ``variant``
    (``.fp16``) names its twins."""
    return f"{arch}_{code}{variant}.onnx"


def int8_name(arch: str, code: str) -> str:
    """``<arch>_<code>.int8.onnx``, the Q/DQ graph of ``adn-edge quantize``."""
    return f"{arch}_{code}.int8.onnx"


def segment_key(index: int, kind: str) -> str:
    """``seg<k>_<full|skip>``: one form of one segment, as engines and messages name it."""
    return f"seg{index}_{kind}"


def segment_file(arch: str, index: int, kind: str, variant: str = "") -> str:
    """``<arch>_seg<k>_<full|skip>.onnx``, one form of one per-stage segment graph."""
    return f"{arch}_{segment_key(index, kind)}{variant}.onnx"


def engine_name(arch: str, key: str, precision: str) -> str:
    """``<arch>_<key>.<precision>.engine``: a TensorRT plan of a sub-network (``key`` a
    code) or of a segment form (``key`` from :func:`segment_key`)."""
    return f"{arch}_{key}.{precision}.engine"


def timing_cache_name(arch: str) -> str:
    return f"{arch}.timing.cache"


def calibration_cache_name(arch: str, key: str) -> str:
    """TensorRT INT8 calibration cache, one per graph: INT8 scales belong to one graph's
    tensors, and the sub-networks differ in which tensors exist."""
    return f"{arch}_{key}.int8.calib"


def ranges_cache_name(arch: str, code: str, method: str) -> str:
    """ONNX Runtime quantiser activation ranges of one graph and calibration method."""
    return f"{arch}_{code}.int8.{method}.{RANGES_SUFFIX}"


def bench_name(kind: str, segmented: bool = False, precision: str | None = None) -> str:
    """``bench-<kind>.json`` for the backend's default precision, ``bench-<kind>-<precision>.json``
    when one was asked for (``--precision int8``), and ``-segmented`` for a segmented run.

    Runs of other graphs must not overwrite each other: an INT8 bench replacing the
    FP16 report would make a switcher running FP16 engines budget with INT8 latencies.
    Readers match reports by their content (:func:`adn_edge.modeldir.results.find_bench`);
    the name only keeps them apart.
    """
    return f"bench-{kind}{'-' + precision if precision else ''}{'-segmented' if segmented else ''}.json"


def eval_name(variant: str = "") -> str:
    """``eval.json``, or ``eval-<variant>.json`` (``eval-int8-segmented.json``) for a run
    of other graphs than the default ones: readers take ``eval.json`` first, so an
    evaluation of INT8 engines is kept beside the default accuracies, not over them."""
    return f"eval-{variant}.json" if variant else EVAL
