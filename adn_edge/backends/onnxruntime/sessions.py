"""Sessions that share weights, arena and threads: what both ONNX Runtime backends build on.

Why this exists: sixteen ResNet-50 sessions loaded the plain way hold sixteen copies
of mostly the same weights (1.3 GB instead of ~0.15 GB). The exporter names every
initializer stably (docs/model-directory.md, "Initializer names"), so
:class:`SharedInitializers` reads each graph's initializers (:mod:`.initializers`),
creates one ``OrtValue`` per distinct tensor and hands it to every session using it
(``SessionOptions.add_initializer``); ONNX Runtime then uses that buffer instead of
its own copy. Same-named tensors are compared byte for byte first, so a graph that
broke the naming rule costs memory, never correctness. :class:`SessionFactory`
builds the sessions of both backends (:mod:`.runner`, :mod:`.segmented`) with the
same options, sharing and measurements.

Activation memory is shared too: one arena registered in ONNX Runtime's
environment (``create_and_register_allocator``) serves every session that sets
``session.use_env_allocators``, instead of one arena per session each keeping its
own peak (~400 MB saved on ResNet50-ADN, figures in :mod:`.runner`). Things that
silently undo the sharing, hence the defaults here:

* ``graph_optimization="all"`` on CPU rewrites convolutions to the NCHWc layout
  with *reordered copies* of their weights in each session (16 sessions: ~1.5 GB
  again). ``extended`` (the default) keeps the shared buffers.
* The Python ``InferenceSession`` keeps the model bytes it was created from for its
  whole life; the factory drops that reference once the session exists.
* Pre-packed weights (MLAS's GEMM layout) are per session: ~8 MB per ResNet-50
  session for the classifier alone, every linear layer of a transformer. Only a
  C-API container Python does not expose shares them, and no latency difference
  was measurable on ResNet-50, so ``prepack=False`` is the default.

That arena is process-wide and, left alone, never gives memory back: one ``infer`` of
a batch of 8192 on resnet_tiny grew it by ~1.1 GB that stayed after ``close()``
(``benchmarks/bench_arena.py``). So a run larger than the backend's
``arena_shrink_above`` asks ONNX Runtime to release the arena's unused regions when
it ends (:meth:`SessionFactory.shrink_options`, the run option
``memory.enable_memory_arena_shrinkage``), and batches above ``max_batch`` are run in
chunks (:mod:`.runner`), so no input can grow it past what ``max_batch`` needs.
Small batches, a control loop's, keep their arena warm and pay nothing.

Threads: every session has its own intra-op pool, whose threads by default keep
spinning for a while after their run ends. A switcher runs one session after another
(a segment chain: S per inference; a control loop alternating sub-networks), and
the previous session's spinners then compete with the running one for the cores:
ResNet50-ADN at 2 threads on 2 cores ran 1.9-2.4x slower than one session alone
(segments 186 ms instead of 55, monolithic super/base alternating 93 instead of 56;
``benchmarks/bench_cpu_modes.py``). ``spinning=False`` (the default) makes idle
threads sleep: as fast as a lone session at 1 and 2 threads. ``thread_pool="global"``
(one pool for the process) is as fast or slightly faster (INT8 segments: 19 vs 23
ms) but process-wide and fixed by its first user, so it stays an option.

glibc keeps the memory ONNX Runtime frees after loading in its heap; :func:`opening`
hands it back once all sessions exist (``malloc_trim``, ~60-100 MB for ResNet-50).
:func:`perturbation_probe` proves the sharing instead of assuming it: it perturbs
shared tensors in place and checks that every session's output moves.

Module-level imports are numpy and the standard library: ``onnxruntime`` is imported
when a factory is constructed, ``onnx`` when a graph's initializers are read.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.backends.onnxruntime.initializers import onnx_initializers
from adn_edge.errors import AdnError
from adn_edge.fileio import check_threads
from adn_edge.modeldir.graph_identity import check_metadata
from adn_edge.modeldir.manifest import read_verified
from adn_edge.runtime.backend import resident_bytes

OPT_LEVELS = ("disable", "basic", "extended", "all")
THREAD_POOLS = ("session", "global")


def ort_unavailable() -> str | None:
    """Why the ONNX Runtime backends cannot be used here (None: they can): the registry's
    availability check, which looks the package up without importing it."""
    try:
        found = importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)."


def cuda_unready(device: str | None) -> str | None:
    """Why ONNX Runtime cannot serve ``device`` here: only ``cuda`` needs asking (the
    CUDA execution provider of onnxruntime-gpu); the CPU provider is always there."""
    if device != "cuda":
        return None
    providers = _import_ort().get_available_providers()
    if "CUDAExecutionProvider" in providers:
        return None
    return f"this ONNX Runtime has no CUDA execution provider (it has: {', '.join(providers)})"


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise AdnError(f"The onnxruntime backend needs ONNX Runtime ({exc}).",
                       "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA).") from None
    return ort


_ENV_LOCK = threading.Lock()
_ENV_ALLOCATORS: dict[str, bool] = {}
_GLOBAL_POOL: dict[str, int | None] = {}


def _register_env_allocator(ort: Any, device: str, device_id: int) -> bool:
    """Register one arena in ONNX Runtime's process-wide environment (once per device).

    Returns whether sessions can use it; a registration refused because one already
    exists (another component did it first) still counts as usable.
    """
    key = f"{device}:{device_id}"
    with _ENV_LOCK:
        if key in _ENV_ALLOCATORS:
            return _ENV_ALLOCATORS[key]
        cfg = ort.OrtArenaCfg(0, -1, -1, -1)  # defaults: no cap, grow by powers of two
        try:
            if device == "cpu":
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, cfg)
            else:
                info = ort.OrtMemoryInfo("Cuda", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, device_id,
                                         ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator_v2("CUDAExecutionProvider", info, {"device_id": str(device_id)}, cfg)
            ok = True
        except Exception as exc:  # noqa: BLE001 - ORT raises plain RuntimeError/Fail
            ok = "already" in str(exc).lower()
        _ENV_ALLOCATORS[key] = ok
        return ok


@dataclass
class SharingStats:
    tensors_referenced: int = 0
    tensors_unique: int = 0
    bytes_referenced: int = 0
    """What the sessions would hold without sharing (every graph's own copy)."""
    bytes_unique: int = 0
    """What is actually allocated for weights."""
    conflicts: list[str] = field(default_factory=list)
    """Names that meant different bytes in different graphs (kept unshared)."""

    def record(self) -> dict[str, Any]:
        return {"tensors_referenced": self.tensors_referenced, "tensors_unique": self.tensors_unique,
                "bytes_referenced": self.bytes_referenced, "bytes_unique": self.bytes_unique,
                "conflicts": list(self.conflicts)}


class SharedInitializers:
    """One OrtValue per distinct (name, bytes) across every graph of a backend."""

    def __init__(self, ort: Any, device: str, device_id: int) -> None:
        self._ort = ort
        self._device = device
        self._device_id = device_id
        self.arrays: dict[str, np.ndarray] = {}
        self.values: dict[str, Any] = {}
        self.users: dict[str, int] = {}
        self.stats = SharingStats()

    def _ortvalue(self, arr: np.ndarray) -> Any:
        # Integer tensors are shape arguments that ONNX Runtime plans on the CPU even
        # under CUDA; a device copy of those would not be used (it would copy back).
        if self._device == "cuda" and arr.dtype.kind == "f":
            return self._ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self._device_id)
        return self._ort.OrtValue.ortvalue_from_numpy(arr)

    def attach(self, data: bytes) -> list[tuple[str, Any]]:
        """(name, OrtValue) for every initializer of the serialized graph ``data`` that
        can be shared, creating the values not seen in an earlier graph."""
        used = []
        for init in onnx_initializers(data):
            arr = init.array
            self.stats.tensors_referenced += 1
            self.stats.bytes_referenced += arr.nbytes
            have = self.arrays.get(init.name)
            if have is None:
                owned = np.array(arr, copy=True, order="C")  # writable (the probe edits it), not the graph's
                self.arrays[init.name] = owned
                self.values[init.name] = self._ortvalue(owned)
                self.users[init.name] = 0
                self.stats.tensors_unique += 1
                self.stats.bytes_unique += owned.nbytes
            elif not (have.dtype == arr.dtype and have.shape == arr.shape
                      and np.array_equal(have.reshape(-1).view(np.uint8), arr.reshape(-1).view(np.uint8))):
                if init.name not in self.stats.conflicts:
                    self.stats.conflicts.append(init.name)
                continue  # this graph keeps its own copy
            self.users[init.name] += 1
            used.append((init.name, self.values[init.name]))
        return used

    def close(self) -> None:
        self.values.clear()
        self.arrays.clear()


class SessionFactory:
    """Builds ONNX Runtime sessions that share weights, arena and threads.

    Shared by the monolithic and the segmented backends so both get the same
    options, the same sharing and the same measurements.
    """

    def __init__(self, *, device: str | int = "auto", threads: int | None = None, thread_pool: str = "session",
                 graph_optimization: str = "extended", prepack: bool = False, share_weights: bool = True,
                 share_arena: bool = True, spinning: bool = False) -> None:
        ort = self.ort = _import_ort()
        if graph_optimization not in OPT_LEVELS:
            raise AdnError(f"graph_optimization must be one of {', '.join(OPT_LEVELS)}, not {graph_optimization!r}.")
        if thread_pool not in THREAD_POOLS:
            raise AdnError(f"thread_pool must be one of {', '.join(THREAD_POOLS)}, not {thread_pool!r}.")
        check_threads(threads, "threads", allow_zero=True)
        self.device, self.device_id = self._device(device)
        self.threads = threads
        self.thread_pool = thread_pool
        self.graph_optimization = graph_optimization
        self.prepack = prepack
        self.share_weights = share_weights
        self.spinning = bool(spinning)
        self.notes: list[str] = []
        if self.device == "cuda":
            self.providers: list[Any] = [("CUDAExecutionProvider", {"device_id": self.device_id}),
                                         "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        self.env_allocator = share_arena and _register_env_allocator(ort, self.device, self.device_id)
        if share_arena and not self.env_allocator:
            self.notes.append("ONNX Runtime refused a shared arena; each session has its own")
        if thread_pool == "global":
            self._global_pool(threads)
        self.shared = SharedInitializers(ort, self.device, self.device_id)
        # Arenas a run may ask to shrink, most complete first; one ORT refuses (no arena
        # there: the CUDA provider configured without one, say) is dropped for the next.
        self._shrink_specs = ["cpu:0"] if self.device == "cpu" else [f"cpu:0;gpu:{self.device_id}", "cpu:0"]
        self._shrink_run_options: Any = None

    def _device(self, device: str | int) -> tuple[str, int]:
        available = self.ort.get_available_providers()
        if isinstance(device, int) and not isinstance(device, bool):
            device = f"cuda:{device}"
        text = str(device).lower()
        if text == "auto":
            return ("cuda", 0) if "CUDAExecutionProvider" in available else ("cpu", 0)
        if text == "cpu":
            return "cpu", 0
        if text.startswith("cuda"):
            idx = text.partition(":")[2]
            if "CUDAExecutionProvider" not in available:
                raise AdnError(f"device={device!r} was asked for, but this ONNX Runtime has no CUDA execution "
                               f"provider (it has: {', '.join(available)}).",
                               "pip install onnxruntime-gpu (matching your CUDA), or use device='cpu'.")
            if idx and not idx.isdigit():
                raise AdnError(f"device={device!r} is not a device: use 'cpu', 'cuda' or 'cuda:N'.")
            return "cuda", int(idx or 0)
        raise AdnError(f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'.")

    def _global_pool(self, threads: int | None) -> None:
        """ONNX Runtime's global pool is one per process and, once created, mandatory for
        every later session in it; its size is fixed by the first caller."""
        size = threads or 0
        with _ENV_LOCK:
            if "intra" not in _GLOBAL_POOL:
                self.ort.set_global_thread_pool_sizes(size, 1)
                _GLOBAL_POOL["intra"] = size
            elif _GLOBAL_POOL["intra"] != size:
                self.notes.append(f"the process-wide thread pool already has {_GLOBAL_POOL['intra']} threads "
                                  f"(set by the first backend that asked); threads={threads} is ignored")

    def _use_global_pool(self) -> bool:
        if self.thread_pool == "session" and "intra" in _GLOBAL_POOL:
            self.thread_pool = "global"
            self.notes.append("this process already has ONNX Runtime's global thread pool, which every session "
                              "must then use: thread_pool='session' and threads are ignored")
        return self.thread_pool == "global"

    def options(self, optimization: str | None = None, save_optimized: str | None = None) -> Any:
        """Session options as configured; ``optimization`` overrides the level (a graph
        optimised already is loaded at ``disable``), ``save_optimized`` makes ONNX
        Runtime write the graph it optimised to that path."""
        ort = self.ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization or self.graph_optimization]
        if save_optimized:
            so.optimized_model_filepath = save_optimized
        if self._use_global_pool():
            so.use_per_session_threads = False
        else:
            if self.threads:
                so.intra_op_num_threads = self.threads
                so.inter_op_num_threads = 1
            if not self.spinning:
                # Idle pool threads sleep instead of spinning (see the module docstring).
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not self.prepack:
            so.add_session_config_entry("session.disable_prepacking", "1")
        if self.env_allocator:
            so.add_session_config_entry("session.use_env_allocators", "1")
        return so

    def shrink_options(self) -> Any:
        """Run options that make ONNX Runtime hand the arena's unused regions back to the
        OS when the run ends (None once every spec was refused). Regions in use by other
        runs are kept, so this is safe while other threads infer on the shared arena."""
        if self._shrink_run_options is None and self._shrink_specs:
            ro = self.ort.RunOptions()
            ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", self._shrink_specs[0])
            self._shrink_run_options = ro
        return self._shrink_run_options

    def shrink_refused(self, exc: BaseException) -> bool:
        """ONNX Runtime refused the shrink spec before running (an arena it does not have):
        drop the spec and say so. False when ``exc`` is some other failure."""
        text = str(exc)
        if "arena" not in text.lower() or not self._shrink_specs:
            return False
        spec = self._shrink_specs.pop(0)
        self._shrink_run_options = None
        if not self._shrink_specs:
            self.notes.append(f"ONNX Runtime refused to shrink the arena ({spec}: {text.strip()[:200]}); "
                              "memory grown by large batches stays allocated")
        return True

    def open_verified(self, directory: Path, record: dict[str, Any], expected: Mapping[str, str],
                      what: str, save_optimized: str | None = None) -> tuple[Any, list[str], int]:
        """A session for a manifest-listed graph, its bytes checked against the sha256 as
        they are read and its metadata against ``expected`` (the identity its record
        implies, :mod:`adn_edge.modeldir.graph_identity`: ``what`` names it in the error);
        returns (session, shared names it uses, file size). The bytes are not kept:
        ONNX Runtime holds what it needs."""
        data = read_verified(directory, record)
        sess, names = self.session(data, record["path"], save_optimized=save_optimized)
        check_metadata(sess.get_modelmeta().custom_metadata_map, expected, what, str(record["path"]))
        return sess, names, len(data)

    def session(self, data: bytes, label: str, optimization: str | None = None,
                save_optimized: str | None = None) -> tuple[Any, list[str]]:
        """A session for the serialized graph ``data``; returns it and the shared names it
        uses (``optimization``, ``save_optimized``: see :meth:`options`)."""
        used = self.shared.attach(data) if self.share_weights and not save_optimized else []

        def create() -> Any:
            so = self.options(optimization, save_optimized)
            for name, value in used:
                so.add_initializer(name, value)
            return self.ort.InferenceSession(data, so, providers=self.providers)

        try:
            try:
                sess = create()
            except Exception as exc:  # noqa: BLE001
                if "global thread pool" not in str(exc) or "intra" in _GLOBAL_POOL:
                    raise
                _GLOBAL_POOL["intra"] = None  # created outside adn-edge: every session must follow it
                sess = create()
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            raise AdnError(f"ONNX Runtime cannot load {label}: {str(exc).strip().splitlines()[0]}",
                           "Re-export the model directory with this adn-edge.") from None
        # The Python wrapper keeps the bytes it was built from for a fallback that we
        # disable; without this, every session pins a full copy of its graph's weights.
        if hasattr(sess, "disable_fallback"):
            sess.disable_fallback()
        if getattr(sess, "_model_bytes", None) is data:
            sess._model_bytes = None
        return sess, [name for name, _ in used]

    def describe(self) -> dict[str, Any]:
        return {"device": self.device if self.device == "cpu" else f"cuda:{self.device_id}",
                "providers": [p if isinstance(p, str) else p[0] for p in self.providers],
                "onnxruntime": self.ort.__version__, "threads": self.threads, "thread_pool": self.thread_pool,
                "spinning": self.spinning if self.thread_pool == "session" else None,
                "graph_optimization": self.graph_optimization, "prepack": self.prepack,
                "shared_arena": bool(self.env_allocator), "shared_weights": self.share_weights,
                "arena_shrink": self._shrink_specs[0] if self._shrink_specs else None,
                "sharing": self.shared.stats.record(), "notes": list(self.notes)}


_FACTORY_OPTIONS = ("device", "threads", "thread_pool", "graph_optimization", "prepack", "share_weights",
                    "share_arena", "spinning")


def split_options(options: dict[str, Any], own: Sequence[str], backend: str) -> dict[str, Any]:
    """Factory options out of ``options``; anything unknown is a user mistake, said so."""
    unknown = sorted(set(options) - set(_FACTORY_OPTIONS) - set(own))
    if unknown:
        accepted = ", ".join(sorted({*_FACTORY_OPTIONS, *own}))
        raise AdnError(f"The {backend} backend has no option {', '.join(map(repr, unknown))}.",
                       f"Its options are: {accepted}.")
    return {k: options[k] for k in _FACTORY_OPTIONS if k in options}


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    scale = float(np.max(np.abs(b))) or 1.0
    return bool(np.max(np.abs(a.astype(np.float64) - b)) > 1e-4 * scale)


@contextlib.contextmanager
def opening(backend: Any) -> Iterator[None]:
    """The frame around creating a backend's sessions: on failure close what was
    opened; on success hand freed heap back to the OS and record the resident memory
    the sessions added (``backend.rss_open_bytes``), so sharing is measured, not assumed."""
    rss0 = resident_bytes()
    try:
        yield
    except BaseException:
        backend.close()
        raise
    release_freed_heap()
    rss1 = resident_bytes()
    backend.rss_open_bytes = rss1 - rss0 if rss0 is not None and rss1 is not None else None


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def run_into_own_buffer(sess: Any, in_name: str, x: Any, out_name: str, run_options: Any = None) -> np.ndarray:
    """One run whose output lands in a numpy buffer we allocate, not in ONNX Runtime's arena.

    Why: ``run`` (and ``OrtValue.numpy()``) return arrays that *wrap* arena memory, so
    an output the caller keeps pins its arena region, and a shrink frees only regions
    with nothing in use. On resnet_tiny a batch of 2048 had its logits land in a 128 MB
    region that the shrink therefore kept (``benchmarks/bench_arena.py``). Bound to our
    own buffer, the output leaves nothing behind. ``x`` is a numpy array or an
    ``OrtValue`` (a segment's hand-over). Falls back to a plain run when the output's
    shape past the batch is not static.
    """
    out_meta = next(o for o in sess.get_outputs() if o.name == out_name)
    dtype = _NUMPY_TYPES.get(out_meta.type)
    rest = list(out_meta.shape[1:])
    is_array = isinstance(x, np.ndarray)
    if dtype is None or not all(isinstance(d, int) for d in rest):
        if is_array:
            result: np.ndarray = sess.run([out_name], {in_name: x}, run_options)[0]
            return np.array(result, copy=True)
        value = sess.run_with_ort_values([out_name], {in_name: x}, run_options)[0]
        return np.array(value.numpy(), copy=True)
    n = int(x.shape[0] if is_array else x.shape()[0])
    out = np.empty([n, *rest], dtype=dtype)
    binding = sess.io_binding()
    if is_array:
        binding.bind_cpu_input(in_name, x)
    else:
        binding.bind_ortvalue_input(in_name, x)
    binding.bind_output(out_name, "cpu", 0, dtype, list(out.shape), out.ctypes.data)
    sess.run_with_iobinding(binding, run_options)
    return out


def release_freed_heap() -> None:
    """Return freed heap memory to the OS (glibc only; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def perturbation_probe(run: Any, units: Sequence[str], names: Sequence[str], shared: SharedInitializers,
                       batch: np.ndarray) -> dict[str, Any]:
    """Does each unit (session) read the shared buffers, or a copy of its own?

    Adds noise to each named shared tensor *in place*, runs every unit that uses
    it and checks its output moved, then restores the tensor and checks the output
    is back bit for bit. A session that copied the tensor (layout transforms, device
    copies) does not move. Call only while nothing else runs: it edits weights.
    """
    base = {u: run(u, batch) for u in units}
    result: dict[str, Any] = {"tensors": {}, "sessions_checked": len(units)}
    for name in names:
        value, arr = shared.values[name], shared.arrays[name]
        original = arr.copy()
        # Random, not constant: a constant added to a weight shifts every channel of a
        # token alike, which the LayerNorm after it removes (ViT, Swin), hiding the edit.
        noise = np.random.default_rng(0).standard_normal(arr.shape)
        bumped = np.asarray(original + noise * max(float(np.std(original)), 1e-2), dtype=arr.dtype)
        try:
            value.update_inplace(bumped)
            moved = {u: _differs(run(u, batch), base[u]) for u in units}
        finally:
            value.update_inplace(original)
        restored = not any(_differs(run(u, batch), base[u]) for u in units)
        result["tensors"][name] = {"sessions": len(units), "reading_shared_buffer": sum(moved.values()),
                                   "copies": sorted(u for u, m in moved.items() if not m), "restored": restored}
    result["ok"] = bool(names) and all(t["reading_shared_buffer"] == t["sessions"] and t["restored"]
                                       for t in result["tensors"].values())
    if not names:
        result["note"] = "no shared tensor to probe (share_weights=False?)"
    return result
