"""ONNX Runtime backends: ``onnxruntime`` (:mod:`.runner`, one session per sub-network)
and ``onnxruntime-segmented`` (:mod:`.segmented`, chains of per-stage graphs), both on
sessions that share weights, arena and threads (:mod:`.sessions`), the weights read out
of the graphs by :mod:`.initializers`.

Nothing is imported here: the runtime registry imports ``.runner`` and ``.segmented``
by name when a backend is asked for (docs/runtime.md), and they import onnxruntime
(and onnx) only when a backend is constructed.
"""
