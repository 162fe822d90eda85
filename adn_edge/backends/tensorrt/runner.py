"""TensorRT backend: every sub-network's engine resident, one shared activation buffer.

Memory is the constraint on a Jetson: 2^S engines each holding their own activation
memory would multiply the footprint by 16. The sub-networks never run at the same
time (a lock serialises runs), so every execution context is created with
``ExecutionContextAllocationStrategy.USER_MANAGED`` and pointed at *one* buffer sized
for the hungriest engine. Input/output buffers (pinned host and device, sized for the
largest batch) and the CUDA stream are shared the same way, and their addresses are
bound to every context once at open: ``run`` allocates nothing, so switching
sub-networks costs a dictionary lookup.

Segmented mode (``tensorrt-segmented``) runs the same machinery over the 2*S segment
engines of ``adn-edge build --segments``: a sub-network is the chain of its S
segment engines launched back to back on the stream, feature maps handed over in
two device buffers (:mod:`~adn_edge.backends.tensorrt.chain` decides who reads and
writes what). TensorRT engines embed their weights, so 16 monolithic ResNet50-ADN
engines hold 16 copies of them; the 8 segment engines hold each about once. The
price is a graph boundary per stage: no layer fusion across it and S launches per
inference, which ``cuda_graphs=True`` folds back into one graph launch.

Engines are trusted only after their manifest record says they were built for this
TensorRT and GPU, and their bytes match the recorded sha256.

Importing this module needs numpy only: TensorRT and the CUDA binding are imported
when a backend is constructed, and :func:`_available` says why it cannot be.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.modeldir.manifest import read_verified
from adn_edge.runtime.backend import Backend, register_backend
from adn_edge.backends.cuda import CaptureFailed, CudaError
from adn_edge.backends.tensorrt.chain import INPUT, LOGITS, Layout, Link, monolithic_layout, segmented_layout

log = logging.getLogger("adn_edge.runtime")

if TYPE_CHECKING:
    import tensorrt as trt

    from adn_edge.backends.tensorrt.env import Environment
    from adn_edge.backends.cuda import CudaApi, DeviceBuffer, Event, Graph, HostBuffer, Stream


def _available() -> str | None:
    from adn_edge.backends.tensorrt.env import unavailable_reason

    return unavailable_reason()


@dataclass
class _Slot:
    """One engine made real: its context, bound to the link's buffers."""

    link: Link
    engine: trt.ICudaEngine
    context: trt.IExecutionContext
    min_batch: int
    max_batch: int
    engine_bytes: int
    activation_bytes: int
    batch: int | None = None
    """The batch the context's input shape is set to (set_input_shape only on change)."""
    graph_contexts: dict[int, trt.IExecutionContext] = field(default_factory=dict)
    """One more context per CUDA-graph batch size, never reshaped: a captured graph
    bakes in its context's shapes, so the eager context must not be the one it uses."""


@dataclass
class _Program:
    """What one sub-network runs: its slots in order, the batch range all of them accept."""

    code: str
    slots: tuple[_Slot, ...]
    min_batch: int
    max_batch: int
    graphs: dict[int, Graph] = field(default_factory=dict)


def _activation_bytes(engine: trt.ICudaEngine) -> int:
    # device_memory_size_v2 arrived in 10.1 (and includes weight-streaming scratch);
    # 10.0 only has the older property, which 11.x removed.
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def _set_shape(context: trt.IExecutionContext, slot: _Slot, n: int) -> None:
    link = slot.link
    if not context.set_input_shape(link.input_name, (n, *link.input_dims)):
        raise AdnError(f"The {link.key} engine rejected batch {n} (its profile allows "
                       f"{slot.min_batch}..{slot.max_batch}).")


def _bind_activation(context: trt.IExecutionContext, buf: DeviceBuffer) -> None:
    if hasattr(context, "set_device_memory"):  # 10.1+
        context.set_device_memory(buf.ptr, buf.nbytes)
    else:  # 10.0: a property
        setattr(context, "device_memory", buf.ptr)  # noqa: B010 - absent from the 10.13 stubs


@register_backend("tensorrt", available=_available, priority=30)
class TensorRTBackend(Backend):
    """Options: ``precision`` (engine precision to open; default the best built for
    all codes), ``cuda`` (``auto``/``cuda-python``/``pycuda``), ``device`` (GPU
    index), ``cuda_graphs`` (capture one CUDA graph per sub-network at
    ``graph_batch``; other batch sizes run without)."""

    verifies_artifacts = True  # every engine is read through read_verified below
    build_command = "adn-edge build DIR"
    """How to rebuild this backend's engines, for error messages."""

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        codes: Sequence[str],
        precision: str | None = None,
        cuda: str = "auto",
        device: int = 0,
        cuda_graphs: bool = False,
        graph_batch: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(directory, manifest, codes, **options)
        from adn_edge.backends.tensorrt import env as trt_env
        from adn_edge.backends.cuda import open_cuda

        trt_env.import_tensorrt()  # AdnError with install instructions when absent
        self._lock = threading.Lock()
        self._closed = False
        self._slots: dict[str, _Slot] = {}
        self._programs: dict[str, _Program] = {}
        self._buffers: list[DeviceBuffer] = []
        self._device: dict[str, DeviceBuffer] = {}
        self._pinned: list[HostBuffer] = []
        self._stream: Stream | None = None
        self.graph_notes: list[str] = []
        self.env: Environment | None = None
        self.activation_bytes = 0
        self.max_batch = 0
        self._runtime: trt.Runtime | None = None
        self.layout = self._layout(precision)  # every manifest problem before CUDA is touched
        self.precision = self.layout.precision
        self._cuda: CudaApi = open_cuda(cuda, device)
        try:
            with self._cuda.activate():
                self._open(cuda_graphs, graph_batch)
        except BaseException:
            self.close()
            raise

    @classmethod
    def unready(cls, manifest: Mapping[str, Any] | None, device: str | None) -> str | None:
        if device == "cpu":
            return "TensorRT runs on NVIDIA GPUs only"
        subnets = (manifest or {}).get("subnets") or {}
        if manifest is not None and not any(e.get("engines") for e in subnets.values()):
            return f"no engine is built (`{cls.build_command}`)"
        return None

    def _layout(self, precision: str | None) -> Layout:
        return monolithic_layout(self.manifest, self.codes, precision)

    # ---------------------------------------------------------------- open

    def _open(self, cuda_graphs: bool, graph_batch: int) -> None:
        import tensorrt as trt

        from adn_edge.backends.tensorrt.env import Environment
        from adn_edge.backends.tensorrt.engines import check_engine_compatible

        env = Environment.of(str(trt.__version__), self._cuda.device_info())
        self.env = env
        layout = self.layout
        for link in layout.links.values():  # every refusal before any deserialisation
            check_engine_compatible(link.record, env, link.key)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = self._runtime = trt.Runtime(self._logger)

        engines: dict[str, tuple[trt.ICudaEngine, int]] = {}
        for key, link in layout.links.items():
            blob = read_verified(self.directory, dict(link.record))  # the hashed bytes are the ones loaded
            engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(blob)  # None on failure
            if engine is None:
                raise AdnError(f"TensorRT {env.tensorrt_version} could not deserialize {link.record['path']}.",
                               f"Rebuild it on this device with `{self.build_command} --force`.")
            self._check_io(engine, link)
            engines[key] = (engine, len(blob))

        activation = max(_activation_bytes(e) for e, _ in engines.values())
        self._activation = self._alloc(activation)
        for key, (engine, size) in engines.items():
            link = layout.links[key]
            lo, _opt, hi = engine.get_tensor_profile_shape(link.input_name, 0)
            self._slots[key] = _Slot(link, engine, self._context(engine, link), int(lo[0]), int(hi[0]), size,
                                     _activation_bytes(engine))
        self.activation_bytes = activation

        for code, keys in layout.programs.items():
            slots = tuple(self._slots[k] for k in keys)
            lo_b, hi_b = max(s.min_batch for s in slots), min(s.max_batch for s in slots)
            if lo_b > hi_b:
                raise AdnError(f"The engines of sub-network {code} accept no common batch size "
                               f"({', '.join(f'{s.link.key}: {s.min_batch}..{s.max_batch}' for s in slots)}).",
                               f"Rebuild them with the same batch options: `{self.build_command} --force`.")
            self._programs[code] = _Program(code, slots, lo_b, hi_b)
        max_batch = self.max_batch = max(p.max_batch for p in self._programs.values())

        for name in layout.buffer_elements:
            self._device[name] = self._alloc(layout.buffer_bytes(name, max_batch))
        self.num_classes = int(np.prod(layout.output_dims))
        self._h_in = self._cuda.alloc_pinned((max_batch, *layout.input_dims), np.dtype(np.float32))
        self._pinned.append(self._h_in)
        self._h_out = self._cuda.alloc_pinned((max_batch, *layout.output_dims), np.dtype(np.float32))
        self._pinned.append(self._h_out)
        self._stream = self._cuda.create_stream()
        self._events: tuple[Event, ...] = (self._cuda.create_event(), self._cuda.create_event())  # timing
        for slot in self._slots.values():
            self._bind_io(slot.context, slot.link)
        if cuda_graphs:
            for program in self._programs.values():
                self._capture(program, graph_batch)

    def _context(self, engine: trt.ICudaEngine, link: Link) -> trt.IExecutionContext:
        """A context without memory of its own, on the one shared activation buffer, with
        the NVTX verbosity turned down: engines are built DETAILED for the inspector, a
        context inherits that, and DETAILED NVTX ranges add latency to every
        ``execute_async_v3`` (also inside a captured CUDA graph: every graph context is
        made here)."""
        import tensorrt as trt

        context: trt.IExecutionContext | None = engine.create_execution_context(
            trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise AdnError(f"TensorRT could not create an execution context for {link.record['path']}.")
        context.nvtx_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
        _bind_activation(context, self._activation)
        return context

    def _bind_io(self, context: trt.IExecutionContext, link: Link) -> None:
        ok = (context.set_tensor_address(link.input_name, self._device[link.source].ptr)
              and context.set_tensor_address(link.output_name, self._device[link.target].ptr))
        if not ok:
            raise AdnError(f"TensorRT refused the I/O buffers of the {link.key} engine.")

    def _alloc(self, nbytes: int) -> DeviceBuffer:
        buf = self._cuda.alloc(nbytes)
        self._buffers.append(buf)
        return buf

    def _check_io(self, engine: trt.ICudaEngine, link: Link) -> None:
        """The engine must read and write exactly what the layout will bind: names,
        float32, per-sample shapes (a mismatch would be a silent buffer overrun)."""
        import tensorrt as trt

        name = str(link.record["path"])
        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            t = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT else outputs).append(t)
        if inputs != [link.input_name] or outputs != [link.output_name]:
            raise AdnError(f"{name} has inputs {inputs} and outputs {outputs}, but the manifest describes "
                           f"{link.input_name!r} -> {link.output_name!r}.",
                           f"Rebuild it with `{self.build_command}`.")
        for t, dims in ((link.input_name, link.input_dims), (link.output_name, link.output_dims)):
            if engine.get_tensor_dtype(t) != trt.DataType.FLOAT:
                raise AdnError(f"{name}: tensor {t!r} is {engine.get_tensor_dtype(t)}, not float32.",
                               "Rebuild it from a graph with float32 input and output.")
            shape = engine.get_tensor_shape(t)
            got = tuple(int(shape[i]) for i in range(1, len(shape)))
            if got != dims:
                raise AdnError(f"{name}: tensor {t!r} has per-sample shape {list(got)}, but the manifest "
                               f"describes {list(dims)}.", f"Rebuild it with `{self.build_command} --force`.")

    def _set_batch(self, slot: _Slot, n: int) -> None:
        if slot.batch != n:
            _set_shape(slot.context, slot, n)
            slot.batch = n

    def _capture(self, program: _Program, n: int) -> None:
        """One CUDA graph per sub-network (the whole chain, in segmented mode), on
        contexts reserved for batch ``n``. TensorRT must have run once with the final
        shapes before capture (it does lazy setup on the first enqueue)."""
        stream = self._stream
        assert stream is not None
        if not program.min_batch <= n <= program.max_batch:
            raise AdnError(f"graph_batch {n} is outside the {program.code} engines' batch range "
                           f"{program.min_batch}..{program.max_batch}.")
        contexts = []
        for slot in program.slots:
            if n not in slot.graph_contexts:
                context = self._context(slot.engine, slot.link)
                self._bind_io(context, slot.link)
                _set_shape(context, slot, n)
                slot.graph_contexts[n] = context
            contexts.append(slot.graph_contexts[n])

        def enqueue() -> bool:
            return all(c.execute_async_v3(stream.handle) for c in contexts)

        if not enqueue():
            raise AdnError(f"The {program.code} engines failed their first run.")
        self._cuda.synchronize(stream)
        self._cuda.begin_capture(stream)
        try:
            ok = enqueue()
        except BaseException:
            with contextlib.suppress(CudaError):  # end the capture; the enqueue's error is the one to see
                self._cuda.destroy_graph(self._cuda.end_capture(stream))
            raise
        try:
            graph = self._cuda.end_capture(stream)
        except CaptureFailed as exc:  # as trtexec: not fatal, this sub-network runs without a graph
            self.graph_notes.append(f"{program.code}: CUDA graph capture failed ({exc}); runs without")
            return
        if not ok:
            self._cuda.destroy_graph(graph)
            self.graph_notes.append(f"{program.code}: TensorRT could not be captured into a CUDA graph; runs without")
            return
        program.graphs[n] = graph

    # ---------------------------------------------------------------- run

    def run(self, code: str, batch: np.ndarray) -> np.ndarray:
        with self._lock:  # the activation and I/O buffers are shared by every engine
            if self._closed:
                raise AdnError("This TensorRT backend was closed.")
            program = self._programs.get(code)
            if program is None:
                raise AdnError(f"Sub-network {code} is not open in this backend "
                               f"(open: {', '.join(self._programs)}).")
            n = int(batch.shape[0])
            dims = self.layout.input_dims
            if tuple(batch.shape[1:]) != dims:
                raise AdnError(f"Input shape {tuple(batch.shape)} does not match the engines' (N, {dims}).")
            if not program.min_batch <= n <= program.max_batch:
                raise AdnError(f"Batch {n} is outside the {code} engines' range "
                               f"{program.min_batch}..{program.max_batch}.",
                               f"Rebuild with `{self.build_command} --max-batch {max(n, 1)} --force`.")
            stream = self._stream
            assert stream is not None
            with self._cuda.activate():
                host_in = self._h_in.array[:n]
                host_in[...] = batch
                self._cuda.copy_htod_async(self._device[INPUT], host_in, stream)
                try:
                    self._cuda.record(self._events[0], stream)
                    graph = program.graphs.get(n)
                    if graph is not None:
                        self._cuda.launch(graph, stream)
                    else:
                        for slot in program.slots:
                            self._set_batch(slot, n)
                            if not slot.context.execute_async_v3(stream.handle):
                                raise RuntimeError(f"TensorRT execution of the {slot.link.key} engine failed")
                    self._cuda.record(self._events[1], stream)
                    host_out = self._h_out.array[:n]
                    self._cuda.copy_dtoh_async(host_out, self._device[LOGITS], stream)
                finally:
                    # Also on failure: the next run must not write the pinned input while
                    # this run's copy of it may still be in flight.
                    self._cuda.synchronize(stream)
                self.last_device_ms = self._cuda.elapsed_ms(self._events[0], self._events[1])
                out: np.ndarray = host_out.copy()
                return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({
            "precision": self.precision,
            "cuda": self._cuda.name,
            "tensorrt_version": self.env.tensorrt_version if self.env else None,
            "gpu": self.env.gpu if self.env else None,
            "engines": len(self._slots),
            "activation_bytes": self.activation_bytes,
            "activation_bytes_unshared": sum(s.activation_bytes for s in self._slots.values()),
            "engine_bytes": {k: s.engine_bytes for k, s in self._slots.items()},
            "engine_bytes_total": sum(s.engine_bytes for s in self._slots.values()),
            "io_buffer_bytes": {k: b.nbytes for k, b in self._device.items()},
            "max_batch": self.max_batch,
            "cuda_graphs": {c: sorted(p.graphs) for c, p in self._programs.items() if p.graphs},
            "notes": list(self.graph_notes),
        })
        return d

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        """Release everything, each step on its own: after a CUDA fault (a sticky error
        makes every later call fail) the rest is still released and the fault logged,
        not raised over the error that led here."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cuda = self._cuda if hasattr(self, "_cuda") else None
            if cuda is None:
                return
            failures: list[str] = []

            def attempt(what: str, fn: Callable[[], object]) -> None:
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - logged; releasing goes on
                    failures.append(f"{what}: {exc}")

            with contextlib.ExitStack() as stack:
                attempt("activate", lambda: stack.enter_context(cuda.activate()))
                stream = self._stream
                if stream is not None:
                    attempt("synchronize", partial(cuda.synchronize, stream))
                for program in self._programs.values():
                    for graph in program.graphs.values():
                        attempt("destroy graph", partial(cuda.destroy_graph, graph))
                    program.graphs.clear()
                self._programs.clear()
                # Contexts before engines before the runtime (TensorRT's ownership order),
                # and all of them before the memory they point at.
                for slot in self._slots.values():
                    slot.graph_contexts.clear()
                    del slot.context
                    del slot.engine
                self._slots.clear()
                self._runtime = None
                for buf in self._buffers:
                    attempt("free", partial(cuda.free, buf))
                self._buffers.clear()
                self._device.clear()
                for host in self._pinned:
                    attempt("free pinned", partial(cuda.free_pinned, host))
                self._pinned.clear()
                for event in getattr(self, "_events", ()):
                    attempt("destroy event", partial(cuda.destroy_event, event))
                self._events = ()
                if stream is not None:
                    attempt("destroy stream", partial(cuda.destroy_stream, stream))
                    self._stream = None
            attempt("close", cuda.close)
            if failures:
                log.warning("TensorRT backend: releasing hit CUDA errors: %s", "; ".join(failures))


@register_backend("tensorrt-segmented", available=_available, priority=29)
class TensorRTSegmentedBackend(TensorRTBackend):
    """The TensorRT backend over segment engines (``adn-edge build --segments``): every
    sub-network from 2*S engines, chained on one stream. Options as ``tensorrt``;
    precision: whichever all segment engines were built in (fp16 first)."""

    segmented = True
    build_command = "adn-edge build DIR --segments"

    def _layout(self, precision: str | None) -> Layout:
        return segmented_layout(self.manifest, self.codes, precision)

    @classmethod
    def unready(cls, manifest: Mapping[str, Any] | None, device: str | None) -> str | None:
        if device == "cpu":
            return "TensorRT runs on NVIDIA GPUs only"
        parts = ((manifest or {}).get("segments") or {}).get("parts") or []
        if manifest is not None and not any(any((p.get("engines") or {}).values()) for p in parts):
            return f"no segment engine is built (`{cls.build_command}`)"
        return None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["segments"] = len(self._slots)
        return d
