"""The ``onnxruntime`` backend: one ONNX Runtime session per sub-network, all resident.

Why this exists: it is the runtime's CPU backend (and CUDA without TensorRT) over
the monolithic graphs of a model directory (``onnx``, ``onnx_fp16`` or
``onnx_int8``, docs/model-directory.md); :class:`SharedSessionsBackend` is what it
has in common with ``onnxruntime-segmented`` (:mod:`.segmented`). Sessions come from
:class:`~.sessions.SessionFactory`, which shares one buffer per distinct weight and
one arena across all of them; :meth:`OnnxRuntimeBackend.verify_sharing` proves the
sharing by perturbation instead of assuming it. Options: docs/runtime.md.

What was measured (``benchmarks/bench_switcher.py``: ResNet50-ADN, 16 sub-networks,
CPU, resident memory above the bare process after every sub-network ran once):
all 16 shared 198 MB against 135 MB for one session alone (1.47x); 1747 MB with
sharing off; 1631 MB for 16 default ``InferenceSession(path)``s (261 MB for one).
The 16 graphs reference 1301 MB of weights, 144 MB of them distinct (one model:
97 MB). The shared arena alone saves ~400 MB.

Bounded by the batch, not by the input (``benchmarks/bench_arena.py``, resnet_tiny,
CPU): the shared arena is process-wide and grew to whatever the largest batch
needed, then kept it; one batch of 8192 left ~1.1 GB resident after ``close()``.
Two options bound it, per open: ``max_batch`` (default
:data:`DEFAULT_MAX_BATCH`): a larger input is run in chunks of ``max_batch`` and the
logits concatenated, so the arena never grows past one chunk's need; and
``arena_shrink_above`` (default :data:`DEFAULT_ARENA_SHRINK_ABOVE`): once a batch
larger than that has run, the next run of a batch up to it (the control loop going
on) or ``close()`` gives the arena's unused regions back to the OS. Shrinking lazily,
when the large batches are over, and not after each of them, is measured:
shrinking after every run of batch 64 re-grew the arena each time and cost 8-10 %
latency at batch 64 and 256, where repeated large batches now cost nothing.

Module-level imports are numpy and the standard library: ``onnxruntime`` is imported
when a backend is constructed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.backends.onnxruntime.sessions import SessionFactory, cuda_unready, opening, ort_unavailable, \
    perturbation_probe, release_freed_heap, run_into_own_buffer, split_options
from adn_edge.errors import AdnError
from adn_edge.modeldir.graph_identity import for_subnet
from adn_edge.runtime.backend import Backend, register_backend

FILE_KEYS = {"fp32": "onnx", "fp16": "onnx_fp16", "int8": "onnx_int8"}

DEFAULT_MAX_BATCH = 256
"""Largest batch one session run gets. Chunking rather than refusing keeps ``infer``
total (an evaluation may hand over thousands of images) with memory bounded; CPU
throughput per image is flat well below 256, so the chunks cost no speed there. A
GPU bench at larger batches raises it (``-O max_batch=N``)."""

DEFAULT_ARENA_SHRINK_ABOVE = 16
"""Batches above this grow the arena for themselves; the first smaller run after them
(or ``close()``) releases what they grew. A control loop's batches stay at or below it
and keep a warm arena."""

BATCH_OPTIONS = ("max_batch", "arena_shrink_above")


def batch_bounds(options: dict[str, Any]) -> tuple[dict[str, Any], int | None, int | None]:
    """(the other options, ``max_batch``, ``arena_shrink_above``), checked. None
    means no limit / never shrink (the behaviour before these bounds, for measuring)."""
    rest = {k: v for k, v in options.items() if k not in BATCH_OPTIONS}
    max_batch = options.get("max_batch", DEFAULT_MAX_BATCH)
    shrink_above = options.get("arena_shrink_above", DEFAULT_ARENA_SHRINK_ABOVE)
    for name, value, low in (("max_batch", max_batch, 1), ("arena_shrink_above", shrink_above, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise AdnError(f"{name} must be a whole number of at least {low}, not {value!r}.",
                           f"Example: -O {name}={DEFAULT_MAX_BATCH if name == 'max_batch' else 16}.")
    return rest, max_batch, shrink_above


def precision_key(precision: str | None) -> str:
    """The manifest's file key for the graphs of ``precision`` (default fp32)."""
    p = (precision or "fp32").lower()
    if p not in FILE_KEYS:
        raise AdnError(f"The onnxruntime backend runs precision fp32, fp16 or int8 graphs, not {precision!r}.",
                       "Export fp16 graphs with `adn-edge export --fp16`; TensorRT engines need backend='tensorrt'.")
    return FILE_KEYS[p]


class SharedSessionsBackend(Backend):
    """What both ONNX Runtime backends share (this one and ``onnxruntime-segmented``):
    sessions from one :class:`~.sessions.SessionFactory` (it checks each file against
    the manifest as it reads it), CUDA asked about only when wanted, the sharing
    described, and released after the sessions that use it."""

    verifies_artifacts = True
    factory: SessionFactory
    precision: str
    file_bytes = 0
    rss_open_bytes: int | None = None
    """Resident memory the sessions added, set by :func:`~.sessions.opening`."""
    sharing_probe: dict[str, Any] | None = None
    """The last :func:`~.sessions.perturbation_probe` result (``verify_sharing``), if any."""
    max_batch: int | None = DEFAULT_MAX_BATCH
    arena_shrink_above: int | None = DEFAULT_ARENA_SHRINK_ABOVE
    _arena_grown = False
    """A batch above ``arena_shrink_above`` ran since the arena was last shrunk."""

    @classmethod
    def unready(cls, manifest: Mapping[str, Any] | None, device: str | None) -> str | None:
        return cuda_unready(device)

    def _take_batch_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Set ``max_batch``/``arena_shrink_above`` from ``options``; returns the rest."""
        rest, self.max_batch, self.arena_shrink_above = batch_bounds(options)
        if self.manifest["input"]["shape"][0] is not None:
            self.max_batch = None  # a static batch is the one size the graphs take: never split
        return rest

    def _run_chunk(self, code: str, batch: np.ndarray, run_options: Any, own: bool) -> np.ndarray:
        """Logits of ``code`` for ``batch`` in one session run (or one chain of them);
        ``own``: in a buffer of ours (see :func:`~.sessions.run_into_own_buffer`)."""
        raise NotImplementedError

    def run(self, code: str, batch: np.ndarray) -> np.ndarray:
        n = int(batch.shape[0])
        large = self.arena_shrink_above is not None and n > self.arena_shrink_above
        if large:
            self._arena_grown = True  # released by the next small run, or by close()
        elif self._arena_grown:
            self._arena_grown = False
            return self._run_shrinking(code, batch)
        step = self.max_batch if self.max_batch is not None and n > self.max_batch else n
        if step == n:
            return self._run_chunk(code, batch, None, large)
        return np.concatenate([self._run_chunk(code, batch[i:i + step], None, True) for i in range(0, n, step)])

    def _run_shrinking(self, code: str, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` and release the arena's unused regions when it ends."""
        options = self.factory.shrink_options()
        if options is None:
            return self._run_chunk(code, batch, None, True)
        try:
            out = self._run_chunk(code, batch, options, True)
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            if not self.factory.shrink_refused(exc):  # refused before running: run it without
                raise
            return self._run_shrinking(code, batch)
        # The arena's regions went back to malloc; glibc keeps freed blocks below its
        # (self-raising) mmap threshold resident until trimmed, which measured ~100 MB.
        release_freed_heap()
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(self.factory.describe())
        d.update({"precision": self.precision, "graph_bytes": self.file_bytes, "rss_open_bytes": self.rss_open_bytes,
                  "sharing_probe": self.sharing_probe, "max_batch": self.max_batch,
                  "arena_shrink_above": self.arena_shrink_above})
        return d

    def _drop_sessions(self) -> None:
        """Forget every session (called before the shared buffers they point into go)."""

    def close(self) -> None:
        if self._arena_grown and self.codes:
            # The last runs were large: one smallest run, shrinking, gives their memory
            # back (the arena outlives this backend: it is the process's).
            self._arena_grown = False
            shape = [1 if d is None else int(d) for d in self.manifest["input"]["shape"]]
            try:
                self._run_shrinking(self.codes[0], np.zeros(shape, dtype=np.float32))
            except Exception:  # noqa: BLE001 - releasing memory must never make close() fail
                pass
        self._drop_sessions()
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.shared.close()


@register_backend("onnxruntime", available=ort_unavailable, priority=20)
class OnnxRuntimeBackend(SharedSessionsBackend):
    """Options: ``precision`` (fp32 | fp16 | int8 graphs), ``device`` (auto | cpu |
    cuda | cuda:N | N), ``threads`` (intra-op threads; None = ONNX Runtime's
    default), ``thread_pool`` (``session``: one pool per session; ``global``: one
    pool for the process, fewer idle threads, size fixed by the first backend),
    ``graph_optimization`` (``extended``; ``all`` is faster on some CPUs but copies
    every convolution's weights per session), ``prepack`` (off, except for int8
    graphs whose integer kernels need it: per-session copies),
    ``share_weights``,
    ``share_arena`` (both default on; off only to measure what they save),
    ``max_batch`` (default 256: larger inputs run in chunks of it; None: no limit),
    ``arena_shrink_above`` (default 16: after larger batches, the next smaller run or
    ``close()`` releases the arena's unused memory; None: never),
    ``check_sharing`` (run :meth:`verify_sharing` at open and refuse to open if a
    session copied a shared tensor)."""

    @classmethod
    def artifacts(cls, manifest: dict[str, Any], codes: Sequence[str], **options: Any) -> list[dict[str, Any]]:
        key = precision_key(options.get("precision"))
        out = []
        for code in codes:
            files = manifest["subnets"][code].get("files", {})
            if key not in files:
                raise AdnError(f"Sub-network {code} has no {key!r} graph in this model directory "
                               f"(it has: {', '.join(sorted(files)) or 'none'}).",
                               "Export it (fp16 graphs: `adn-edge export --fp16`), or open another precision.")
            out.append(files[key])
        return out

    def __init__(self, directory: Path, manifest: dict[str, Any], codes: Sequence[str], *,
                 precision: str | None = None, check_sharing: bool = False, **options: Any) -> None:
        super().__init__(directory, manifest, codes)
        factory_options = split_options(self._take_batch_options(options), BATCH_OPTIONS, "onnxruntime")
        self.precision = (precision or "fp32").lower()
        if self.precision == "int8":
            # INT8 kernels need their pre-packed weights: 3.3x FP32 speed with them, 1.5x
            # without (benchmarks/results/int8.json), worth the per-session copies.
            factory_options.setdefault("prepack", True)
        records = dict(zip(codes, self.artifacts(manifest, codes, precision=precision), strict=True))
        self.factory = SessionFactory(**factory_options)
        self.input_name = manifest["input"].get("name", "input")
        self.output_name = manifest["output"].get("name", "logits")
        self._sessions: dict[str, Any] = {}
        self.file_bytes = 0
        with opening(self):
            for code in self.codes:
                sess, _, nbytes = self.factory.open_verified(self.directory, records[code],
                                                             for_subnet(manifest, code), f"sub-network {code}")
                self.file_bytes += nbytes
                self._check_io(sess, records[code]["path"])
                self._sessions[code] = sess
        if check_sharing:
            probe = self.verify_sharing()
            if not probe["ok"]:
                self.close()
                raise AdnError(f"check_sharing: some sessions hold their own copy of shared weights ({probe}).",
                               "Use graph_optimization='extended' (the default) or drop check_sharing.")

    def _check_io(self, sess: Any, label: str) -> None:
        ins = [i.name for i in sess.get_inputs()]
        outs = [o.name for o in sess.get_outputs()]
        if ins != [self.input_name] or outs[:1] != [self.output_name]:
            raise AdnError(f"{label} has inputs {ins} and outputs {outs}, but the manifest describes "
                           f"{self.input_name!r} -> {self.output_name!r}.", "Re-export the model directory.")

    def _run_chunk(self, code: str, batch: np.ndarray, run_options: Any, own: bool) -> np.ndarray:
        sess = self._sessions[code]
        if own:  # a large or arena-shrinking run: nothing the caller keeps may pin the arena
            return run_into_own_buffer(sess, self.input_name, batch, self.output_name, run_options)
        out: np.ndarray = sess.run([self.output_name], {self.input_name: batch})[0]
        return out

    def verify_sharing(self, names: Sequence[str] | None = None, batch: np.ndarray | None = None) -> dict[str, Any]:
        """Prove (by perturbation, see :func:`perturbation_probe`) that every session
        reads the shared tensors ``names`` (default: the first and last tensor that
        every session uses: the stem convolution and the classifier)."""
        shared = self.factory.shared
        if names is None:
            common = [n for n, k in shared.users.items()
                      if k == len(self._sessions) and shared.arrays[n].dtype.kind == "f" and shared.arrays[n].ndim]
            names = list(dict.fromkeys([common[0], common[-1]])) if common else []
        if batch is None:
            shape = [1 if d is None else int(d) for d in self.manifest["input"]["shape"]]
            batch = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        self.sharing_probe = perturbation_probe(self.run, list(self._sessions), names, shared, batch)
        return self.sharing_probe

    def _drop_sessions(self) -> None:
        getattr(self, "_sessions", {}).clear()
