"""INT8: a calibrated Q/DQ graph per sub-network, for TensorRT and for CPUs.

::

    from adn_edge.quantize import quantize_directory, quantize_segments, QuantizeOptions

    report = quantize_directory("engines/resnet50", calib="calib_images/",
                                options=QuantizeOptions(method="entropy", samples=512, eval_data="val/"))
    # engines/resnet50/resnet50_<code>.int8.onnx, listed in manifest.json as files.onnx_int8

    report = quantize_segments("engines/resnet50", calib="calib_images/")
    # engines/resnet50/resnet50_seg<k>_<full|skip>.int8.onnx, as segments.parts[k].files_int8

One explicitly quantised graph (QuantizeLinear/DequantizeLinear pairs, INT8 per-channel
weights, symmetric INT8 activations) serves every target: TensorRT 11 builds INT8 only
from such graphs (strongly typed networks), JetPack 6's TensorRT 10.3 builds them too,
and ONNX Runtime runs them with integer kernels on CPUs.

Why ONNX Runtime's quantisation tools (``onnxruntime.quantization.quantize_static``) and
not NVIDIA ModelOpt's ONNX PTQ, which also writes Q/DQ graphs:

* **Placement that both runtimes fuse.** ONNX Runtime quantises the outputs of the
  operators it quantises as well as their inputs (Q/DQ around every Conv, Add, Gemm),
  which is what its CPU kernels need to turn ``DQ -> Conv -> Q`` into one QLinearConv
  (measured here: ResNet50-ADN INT8 runs 2.7-2.9x faster than FP32 on one CPU core, see
  ``benchmarks/bench_int8.py``); TensorRT fuses the same pattern into INT8 kernels with
  INT8 outputs. ModelOpt places Q/DQ "following TensorRT rules" and says itself that
  real speedups come from compiling its graphs with TensorRT: weighted layers get Q/DQ
  on their inputs, and on ONNX Runtime such a layer runs as dequantise + float
  convolution. One graph for Jetson, desktop GPUs and CPUs means ONNX Runtime's
  placement.
* **Dependencies.** ``onnxruntime`` is already a dependency (export verifies every graph
  with it) and ships the quantiser and its calibrators (min/max, entropy, percentile).
  ModelOpt (``nvidia-modelopt``) is a large extra dependency, not installed here, whose
  ONNX PTQ is itself built on ONNX Runtime's quantiser (it ships patches of it,
  ``modelopt.onnx.quantization.ort_patching``); it earns its place for FP8/INT4 or
  transformer-specific recipes, which this issue does not need. It is kept out.
* **What TensorRT needs is reachable with options**: symmetric activations
  (``ActivationSymmetric``), per-channel weights, float biases (``QuantizeBias=False``:
  TensorRT's parser rejects a dequantised INT32 bias). See :mod:`adn_edge.quantize.qdq`
  for each choice and the one post-processing step ONNX Runtime's own CPU kernels need.

Modules: :mod:`~adn_edge.quantize.calibration` (images and their fingerprint),
:mod:`~adn_edge.quantize.qdq` (ONNX Runtime calibration + quantisation, cache, checks),
:mod:`~adn_edge.quantize.accuracy` (INT8 vs FP32, ``eval-int8.json``),
:mod:`~adn_edge.quantize.runner` (:func:`quantize_directory`),
:mod:`~adn_edge.quantize.segments` (:func:`quantize_segments`: the segment graphs of the
segmented mode, each calibrated on the activations of every prefix of forms before it).
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy: `adn-edge` reads adn_edge.quantize.defaults for its help text at every start,
# which must not import numpy and onnx for commands that never quantise.
_EXPORTS = {
    "DEFAULT_METHOD": "defaults", "DEFAULT_PERCENTILE": "defaults", "DEFAULT_SAMPLES": "defaults",
    "DROP_WARN_POINTS": "defaults", "INT8_REL_TOLERANCE": "defaults", "METHODS": "defaults",
    "MIN_SAMPLES": "defaults", "RECOMMENDED_SAMPLES": "defaults",
    "CalibrationData": "calibration", "Comparison": "accuracy", "EVAL_INT8_FILENAME": "accuracy",
    "Method": "qdq", "check_qdq": "qdq", "is_quantized": "qdq",
    "FILE_KEY": "runner", "QuantizeOptions": "runner", "QuantizeReport": "runner", "SubnetQuantization": "runner",
    "int8_name": "runner", "quantize_directory": "runner",
    "SegmentsQuantizeReport": "segments", "quantize_segments": "segments",
}
__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_PERCENTILE",
    "DEFAULT_SAMPLES",
    "DROP_WARN_POINTS",
    "EVAL_INT8_FILENAME",
    "FILE_KEY",
    "INT8_REL_TOLERANCE",
    "METHODS",
    "MIN_SAMPLES",
    "RECOMMENDED_SAMPLES",
    "CalibrationData",
    "Comparison",
    "Method",
    "QuantizeOptions",
    "QuantizeReport",
    "SegmentsQuantizeReport",
    "SubnetQuantization",
    "check_qdq",
    "int8_name",
    "is_quantized",
    "quantize_directory",
    "quantize_segments",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adn_edge.quantize' has no attribute {name!r}")
    return getattr(importlib.import_module(f"adn_edge.quantize.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
