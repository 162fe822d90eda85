"""The initializers of a serialized ONNX graph, as numpy arrays, for weight sharing.

Why this exists: the ONNX Runtime backends share one buffer per distinct weight
across all their sessions (:mod:`.sessions`), so they must see every graph's
initializers before ONNX Runtime does. The graph bytes are parsed with the ``onnx``
package (``ModelProto.FromString``: no external data is ever loaded) and converted
as :func:`onnx.numpy_helper.to_array` converts them: ``raw_data`` (how the exporter
stores every tensor) viewed with ``np.frombuffer`` once its size is checked against
the shape, the typed fields (``float_data``, ``int32_data``, ``int64_data``, ...)
by ``to_array`` itself.

This replaced a hand-written protobuf reader that returned zero-copy views into the
graph bytes (``benchmarks/bench_initializer_reader.py`` keeps it for comparison).
Measured there on ResNet50-ADN's 16 graphs (benchmarks/results/initializer_reader.json):
this reader is ~50x slower (~0.9 s against ~20 ms in all: protobuf copies every
tensor twice) and holds ~1 extra graph's bytes while reading one. Opening the whole
directory (16 sessions, ~5 s, where ONNX Runtime's own work dominates) costs ~7 %
more CPU time and, in about half the runs, a ~60 MB higher peak (heap left
fragmented by those copies); the resident memory once open is the same. It also
reads typed-field tensors the former one left unshared (the per-channel int8 zero
points of Q/DQ graphs).

Only the element types that ONNX Runtime takes from numpy are returned; tensors
stored outside the graph (external data), strings, split tensors (``segment``) and
the exotic float types are left out, so their graph keeps its own copy: that costs
memory, never correctness. A graph that cannot be parsed, or whose tensor holds
fewer or more bytes than its shape says, raises :class:`~adn_edge.errors.AdnError`.

``onnx`` is imported when a graph is read, not with this module: importing the
runtime needs numpy only (docs/runtime.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from adn_edge.errors import AdnError

# TensorProto.DataType -> numpy, for the types a numpy array can hand ONNX Runtime.
_DTYPES: dict[int, Any] = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
                           7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


@dataclass
class Initializer:
    name: str
    array: np.ndarray
    """Read-only, and may share memory with the parsed graph: copy it before keeping it."""


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise AdnError(f"Sharing weights across ONNX Runtime sessions reads the graphs with the onnx package ({exc}).",
                       "pip install onnx, or open with share_weights=False (each session then holds its own "
                       "copy of every weight).") from None
    return onnx


def _array(tensor: Any, numpy_helper: Any) -> np.ndarray | None:
    """One TensorProto as an array, or None for a form that is left unshared."""
    np_type = _DTYPES.get(tensor.data_type)
    if np_type is None or tensor.data_location == _EXTERNAL or tensor.HasField("segment"):
        return None
    dims = tuple(tensor.dims)
    if any(d < 0 for d in dims):
        raise AdnError(f"Initializer {tensor.name!r} has a negative dimension {list(dims)}: the graph is damaged.",
                       "Re-export the model directory.")
    count = math.prod(dims)
    if tensor.HasField("raw_data"):
        raw = tensor.raw_data
        dtype = np.dtype(np_type).newbyteorder("<")  # ONNX stores raw_data little-endian
        if len(raw) != count * dtype.itemsize:
            raise AdnError(f"Initializer {tensor.name!r} holds {len(raw)} bytes, but {count} {dtype.name} values "
                           f"of shape {list(dims)} need {count * dtype.itemsize}: the graph is damaged.",
                           "Re-export the model directory.")
        return np.frombuffer(raw, dtype=dtype).reshape(dims)
    try:
        arr: np.ndarray = numpy_helper.to_array(tensor)  # float_data, int32_data, int64_data, ...
    except ValueError as exc:
        raise AdnError(f"Initializer {tensor.name!r} does not hold its shape {list(dims)}: {exc}.",
                       "Re-export the model directory.") from None
    return arr


def onnx_initializers(data: bytes) -> Iterator[Initializer]:
    """The graph-level initializers of the serialized ModelProto ``data``.

    The graph is parsed now (an unreadable one raises :class:`AdnError` here); the
    arrays are made one at a time as the result is iterated.
    """
    onnx = _import_onnx()
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, whose module depends on its backend
        raise AdnError(f"These {len(data)} bytes are not a readable ONNX graph (truncated or damaged?): "
                       f"{str(exc).strip() or type(exc).__name__}.",
                       "Re-export the model directory, or check the file against manifest.json's sha256.") from None
    return _each(model, onnx.numpy_helper)


def _each(model: Any, numpy_helper: Any) -> Iterator[Initializer]:
    for tensor in model.graph.initializer:
        if tensor.name:
            arr = _array(tensor, numpy_helper)
            if arr is not None:
                yield Initializer(tensor.name, arr)
