"""TensorRT backend: every sub-network's engine resident, one shared activation buffer.

Memory is the constraint on a Jetson: 2^S engines each holding their own activation
memory would multiply the footprint by 16. The sub-networks never run at the same
time (a lock serialises runs), so every execution context is created with
``ExecutionContextAllocationStrategy.USER_MANAGED`` and pointed at *one* buffer sized
for the hungriest engine. Input/output buffers (pinned host and device, sized for the
largest batch) and the CUDA stream are shared the same way, and their addresses are
bound to every context once at open: ``run`` allocates nothing, so switching
sub-networks costs a dictionary lookup.

Engines are trusted only after their manifest record says they were built for this
TensorRT and GPU, and their bytes match the recorded sha256.

Importing this module needs numpy only: TensorRT and the CUDA binding are imported
when a backend is constructed, and :func:`_available` says why it cannot be.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.runtime.backend import Backend, register_backend

if TYPE_CHECKING:
    import tensorrt as trt

    from adn_edge.build.plan import Environment
    from adn_edge.runtime.cuda_layer import CudaApi, DeviceBuffer, Event, Graph, HostBuffer, Stream


def _available() -> str | None:
    from adn_edge.build.trt_env import unavailable_reason

    return unavailable_reason()


@dataclass
class _Slot:
    """One sub-network: its engine, its context and the batch sizes it accepts."""

    code: str
    engine: trt.ICudaEngine
    context: trt.IExecutionContext
    min_batch: int
    max_batch: int
    engine_bytes: int
    activation_bytes: int
    batch: int | None = None
    """The batch the context's input shape is set to (set_input_shape only on change)."""
    graphs: dict[int, Graph] = field(default_factory=dict)


def _activation_bytes(engine: trt.ICudaEngine) -> int:
    # device_memory_size_v2 arrived in 10.1 (and includes weight-streaming scratch);
    # 10.0 only has the older property, which 11.x removed.
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


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

    verifies_artifacts = True  # every engine is read through manifest.verify_file below

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
        from adn_edge.build import trt_env
        from adn_edge.build.plan import choose_precision
        from adn_edge.runtime.cuda_layer import open_cuda

        trt_env.import_tensorrt()  # AdnError with install instructions when absent
        self._lock = threading.Lock()
        self._closed = False
        self._slots: dict[str, _Slot] = {}
        self._buffers: list[DeviceBuffer] = []
        self._pinned: list[HostBuffer] = []
        self._stream: Stream | None = None
        self.graph_notes: list[str] = []
        self.env: Environment | None = None
        self.activation_bytes = 0
        self.max_batch = 0
        self._runtime: trt.Runtime | None = None
        self.precision = choose_precision(manifest, self.codes, precision)
        self._cuda: CudaApi = open_cuda(cuda, device)
        try:
            with self._cuda.activate():
                self._open(cuda_graphs, graph_batch)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- open

    def _open(self, cuda_graphs: bool, graph_batch: int) -> None:
        import tensorrt as trt

        from adn_edge.build.plan import Environment, check_engine_compatible, engine_for
        from adn_edge.manifest import verify_file

        major, minor = self._cuda.compute_capability()
        env = Environment(str(trt.__version__), self._cuda.device_name(), f"{major}.{minor}")
        self.env = env
        records = {code: engine_for(self.manifest, code, self.precision) for code in self.codes}
        for code, rec in records.items():  # every refusal before any deserialisation
            check_engine_compatible(rec, env, code)

        spec = self.manifest["input"]
        self.input_name = str(spec.get("name") or "input")
        self.output_name = str(self.manifest["output"].get("name") or "logits")
        self.chw = tuple(int(d) for d in spec["shape"][1:])
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = self._runtime = trt.Runtime(self._logger)

        engines: dict[str, tuple[trt.ICudaEngine, int]] = {}
        for code, rec in records.items():
            blob = verify_file(self.directory, dict(rec)).read_bytes()
            engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(blob)  # None on failure
            if engine is None:
                raise AdnError(f"TensorRT {env.tensorrt_version} could not deserialize {rec['path']}.",
                               "Rebuild it on this device with `adn-edge build DIR --force`.")
            self._check_io(engine, str(rec["path"]))
            engines[code] = (engine, len(blob))

        activation = max(_activation_bytes(e) for e, _ in engines.values())
        act_buf = self._alloc(activation)
        max_batch = 1
        for code, (engine, size) in engines.items():
            lo, _opt, hi = engine.get_tensor_profile_shape(self.input_name, 0)
            context: trt.IExecutionContext | None = engine.create_execution_context(
                trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is None:
                raise AdnError(f"TensorRT could not create an execution context for {records[code]['path']}.")
            _bind_activation(context, act_buf)
            self._slots[code] = _Slot(code, engine, context, int(lo[0]), int(hi[0]), size, _activation_bytes(engine))
            max_batch = max(max_batch, int(hi[0]))
        self.activation_bytes = activation
        self.max_batch = max_batch

        first = self._slots[self.codes[0]]
        first.context.set_input_shape(self.input_name, (first.min_batch, *self.chw))
        first.batch = first.min_batch
        out_shape = first.context.get_tensor_shape(self.output_name)
        self.num_classes = int(out_shape[len(out_shape) - 1])
        self._d_in = self._alloc(max_batch * int(np.prod(self.chw)) * 4)
        self._d_out = self._alloc(max_batch * self.num_classes * 4)
        self._h_in = self._cuda.alloc_pinned((max_batch, *self.chw), np.dtype(np.float32))
        self._pinned.append(self._h_in)
        self._h_out = self._cuda.alloc_pinned((max_batch, self.num_classes), np.dtype(np.float32))
        self._pinned.append(self._h_out)
        self._stream = self._cuda.create_stream()
        self._events: tuple[Event, ...] = (self._cuda.create_event(), self._cuda.create_event())  # timing
        for slot in self._slots.values():
            ok = (slot.context.set_tensor_address(self.input_name, self._d_in.ptr)
                  and slot.context.set_tensor_address(self.output_name, self._d_out.ptr))
            if not ok:
                raise AdnError(f"TensorRT refused the I/O buffers of the {slot.code} engine.")
        if cuda_graphs:
            for slot in self._slots.values():
                self._capture(slot, graph_batch)

    def _alloc(self, nbytes: int) -> DeviceBuffer:
        buf = self._cuda.alloc(nbytes)
        self._buffers.append(buf)
        return buf

    def _check_io(self, engine: trt.ICudaEngine, name: str) -> None:
        import tensorrt as trt

        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            t = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT else outputs).append(t)
        if inputs != [self.input_name] or outputs != [self.output_name]:
            raise AdnError(f"{name} has inputs {inputs} and outputs {outputs}, but the manifest describes "
                           f"{self.input_name!r} -> {self.output_name!r}.", "Rebuild it with `adn-edge build DIR`.")
        for t in (self.input_name, self.output_name):
            if engine.get_tensor_dtype(t) != trt.DataType.FLOAT:
                raise AdnError(f"{name}: tensor {t!r} is {engine.get_tensor_dtype(t)}, not float32.",
                               "Rebuild it from a graph with float32 input and output.")

    def _set_batch(self, slot: _Slot, n: int) -> None:
        if slot.batch != n:
            if not slot.context.set_input_shape(self.input_name, (n, *self.chw)):
                raise AdnError(f"The {slot.code} engine rejected batch {n} (its profile allows "
                               f"{slot.min_batch}..{slot.max_batch}).")
            slot.batch = n

    def _capture(self, slot: _Slot, n: int) -> None:
        """One CUDA graph per sub-network; TensorRT must have run once with the final
        shapes before capture (it does lazy setup on the first enqueue)."""
        assert self._stream is not None
        if not slot.min_batch <= n <= slot.max_batch:
            raise AdnError(f"graph_batch {n} is outside the {slot.code} engine's batch range "
                           f"{slot.min_batch}..{slot.max_batch}.")
        self._set_batch(slot, n)
        if not slot.context.execute_async_v3(self._stream.handle):
            raise AdnError(f"The {slot.code} engine failed its first run.")
        self._cuda.synchronize(self._stream)
        self._cuda.begin_capture(self._stream)
        try:
            ok = slot.context.execute_async_v3(self._stream.handle)
        finally:
            graph = self._cuda.end_capture(self._stream)
        if not ok:
            self._cuda.destroy_graph(graph)
            self.graph_notes.append(f"{slot.code}: TensorRT could not be captured into a CUDA graph; runs without")
            return
        slot.graphs[n] = graph

    # ---------------------------------------------------------------- run

    def run(self, code: str, batch: np.ndarray) -> np.ndarray:
        with self._lock:  # the activation and I/O buffers are shared by every engine
            if self._closed:
                raise AdnError("This TensorRT backend was closed.")
            slot = self._slots.get(code)
            if slot is None:
                raise AdnError(f"Sub-network {code} is not open in this backend (open: {', '.join(self._slots)}).")
            n = int(batch.shape[0])
            if tuple(batch.shape[1:]) != self.chw:
                raise AdnError(f"Input shape {tuple(batch.shape)} does not match the engines' (N, {self.chw}).")
            if not slot.min_batch <= n <= slot.max_batch:
                raise AdnError(f"Batch {n} is outside the {code} engine's range {slot.min_batch}..{slot.max_batch}.",
                               f"Rebuild with `adn-edge build DIR --max-batch {max(n, 1)} --force`.")
            assert self._stream is not None
            with self._cuda.activate():
                host_in = self._h_in.array[:n]
                host_in[...] = batch
                self._cuda.copy_htod_async(self._d_in, host_in, self._stream)
                self._cuda.record(self._events[0], self._stream)
                graph = slot.graphs.get(n)
                if graph is not None:
                    self._cuda.launch(graph, self._stream)
                else:
                    self._set_batch(slot, n)
                    if not slot.context.execute_async_v3(self._stream.handle):
                        raise RuntimeError(f"TensorRT execution of the {code} engine failed")
                self._cuda.record(self._events[1], self._stream)
                host_out = self._h_out.array[:n]
                self._cuda.copy_dtoh_async(host_out, self._d_out, self._stream)
                self._cuda.synchronize(self._stream)
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
            "activation_bytes": self.activation_bytes,
            "activation_bytes_unshared": sum(s.activation_bytes for s in self._slots.values()),
            "engine_bytes": {c: s.engine_bytes for c, s in self._slots.items()},
            "max_batch": self.max_batch,
            "cuda_graphs": {c: sorted(s.graphs) for c, s in self._slots.items() if s.graphs},
            "notes": list(self.graph_notes),
        })
        return d

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cuda = self._cuda if hasattr(self, "_cuda") else None
            if cuda is None:
                return
            with cuda.activate():
                if self._stream is not None:
                    cuda.synchronize(self._stream)
                for slot in self._slots.values():
                    for graph in slot.graphs.values():
                        cuda.destroy_graph(graph)
                    slot.graphs.clear()
                # Contexts before engines before the runtime (TensorRT's ownership order),
                # and all of them before the memory they point at.
                for slot in self._slots.values():
                    del slot.context
                    del slot.engine
                self._slots.clear()
                self._runtime = None
                for buf in self._buffers:
                    cuda.free(buf)
                self._buffers.clear()
                for host in self._pinned:
                    cuda.free_pinned(host)
                self._pinned.clear()
                for event in getattr(self, "_events", ()):
                    cuda.destroy_event(event)
                self._events = ()
                if self._stream is not None:
                    cuda.destroy_stream(self._stream)
                    self._stream = None
            cuda.close()
