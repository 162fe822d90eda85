"""EngineSwitcher: every sub-network resident, switched by swapping one reference.

A control loop calls :meth:`EngineSwitcher.infer` at a fixed rate and, as its
deadline, battery or temperature moves, :meth:`EngineSwitcher.switch`. At that
moment nothing may load, allocate or wait, so everything is done in :meth:`open`:
the manifest is validated, every artifact is checked against its sha256, every
sub-network is made ready by the backend and run once (first-run allocations and
lazy initialisation happen before the loop starts, not at the first switch).

Thread safety (docs/runtime.md) comes from one rule: the active
sub-network is a single string attribute, replaced atomically by ``switch`` and
read exactly once by each ``infer``. So an inference runs wholly on the code that
was active when it began, and ``switch`` never takes a lock that ``infer`` holds:
it cannot wait for an inference, however long that takes. Backends that cannot
run two inferences at once serialise them themselves (TensorRT's shared
activation buffer) with a lock ``switch`` never sees.

The only lock on the inference path guards a counter of inferences in flight, so
that :meth:`close` can wait for them before releasing memory they are reading.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.modeldir import manifest as manifest_mod
from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.modeldir import ModelDir, open_dir
from adn_edge.runtime.backend import Backend, resolve_backend

def _closed_error() -> AdnError:
    return AdnError("This EngineSwitcher is closed: its engines were released.",
                    "Open the model directory again with EngineSwitcher.open(DIR).")


def default_segmented(m: dict[str, Any], backend: str, precision: str | None,
                      device: str | None) -> tuple[bool, str]:
    """Segmented or monolithic, when the caller did not say; returns (choice, why).

    The rule (measured: ``benchmarks/bench_cpu_modes.py``, README "Results"): on ONNX
    Runtime's CPU provider, segment graphs at full optimisation are as fast as
    monolithic graphs and hold each weight once, so a directory with segments of the
    asked precision (fp32, or int8 from ``quantize --segments``) runs segmented, unless
    its segments are a different model from its monolithic graphs (monolithic graphs
    recalibrated per sub-network, segments without the per-sub-network corrections).
    Everywhere else (TensorRT, ONNX Runtime on a GPU, torch) monolithic, which is what
    those were measured best at; ``segmented=True`` still forces segments.
    """
    seg = m.get("segments")
    if not isinstance(seg, dict) or not seg.get("parts"):
        return False, "no segment graphs in this directory"
    p = (precision or "fp32").lower()
    key = manifest_mod.SEGMENT_FILE_KEYS.get(p)
    if p not in ("fp32", "int8") or key is None or any(key not in part for part in seg["parts"]):
        return False, f"no {p} segment graphs (segments win on CPU in fp32 and int8)"
    if p == "int8" and manifest_mod.stale_int8_segments(seg):
        return False, "the int8 segment graphs are stale"
    if m.get("recalibration") and not seg.get("corrections"):
        return False, "the monolithic graphs are recalibrated per sub-network and the segments are not"
    try:
        spec = resolve_backend(backend, segmented=False, manifest=m, device=device)
    except AdnError:
        return False, "no monolithic backend to compare with"
    if spec.name != "onnxruntime":
        return False, f"backend {spec.name} (segments win on ONNX Runtime's CPU provider)"
    dev = str(device or "auto").lower()
    on_cpu = dev == "cpu" or (dev == "auto" and spec.factory.unready(m, "cuda") is not None)  # type: ignore[attr-defined]
    if not on_cpu:
        return False, "ONNX Runtime on a GPU (segments win on its CPU provider)"
    return True, "ONNX Runtime on the CPU with segment graphs: as fast as monolithic, each weight held once"


class EngineSwitcher:
    """Holds every requested sub-network of one model directory ready to run.

    Create it with :meth:`open`. ``switch`` and ``infer`` may be called from any
    threads; ``close`` (or leaving a ``with`` block) releases everything after the
    inferences in flight have finished.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], backend: Backend, codes: Sequence[str],
                 *, opened_s: float = 0.0, segmented: bool = False) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self._backend: Backend | None = backend
        self.backend_name = backend.name
        self.codes: tuple[str, ...] = tuple(codes)
        self.segmented = segmented
        self.arch = str(manifest["arch"])
        self.num_stages = int(manifest["num_stages"])
        spec = manifest["input"]
        shape = list(spec["shape"])
        self.input_name = spec.get("name", "input")
        self._chw = tuple(int(d) for d in shape[1:])
        self._static_batch = None if shape[0] is None else int(shape[0])
        self._opened_s = opened_s
        self._aliases: dict[str, str] = {}
        for code in self.codes:
            for spelling in (code, subnet.to_skip_cfg(code), subnet.to_skip_cfg(code).lower()):
                self._aliases[spelling] = code
        for word, code in (("super", subnet.super_code(self.num_stages)), ("base", subnet.base_code(self.num_stages))):
            if code in self.codes:
                self._aliases[word] = code
        self._active: str = self.codes[0]
        self._closed = False
        self._flight_lock = threading.Lock()
        self._idle = threading.Condition(self._flight_lock)
        self._in_flight = 0
        self._policy: Any = None

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, directory: str | os.PathLike[str] | ModelDir, backend: str = "auto", subnets: str | Sequence[str] = "all",
             precision: str | None = None, *, segmented: bool | None = None, warmup: bool = True,
             **options: Any) -> EngineSwitcher:
        """Load every requested sub-network of ``directory`` and return a ready switcher.

        ``backend``: ``auto`` (TensorRT if usable, else ONNX Runtime, else torch),
        ``tensorrt``, ``onnxruntime`` or ``torch``. ``subnets``: ``all`` (every
        sub-network the directory holds) or codes in any accepted spelling; the
        first is active after open. ``precision``: which graphs/engines to load
        (backend default when None). ``segmented``: run each sub-network as a chain
        of per-stage graphs (see :mod:`adn_edge.backends.onnxruntime.segmented`);
        None (the default) chooses by :func:`default_segmented`. Other keyword
        options go to the backend (each backend's docstring lists them; unknown
        ones are refused).
        """
        t0 = time.perf_counter()
        opened = open_dir(directory)
        directory, m = opened.path, opened.manifest
        if segmented is None:
            segmented, why = default_segmented(m, backend, precision, options.get("device"))
        else:
            why = "asked for"
        codes = cls._codes(m, subnets, segmented)
        spec = resolve_backend(backend, segmented=segmented, manifest=m, device=options.get("device"))
        factory: Any = spec.factory
        if not getattr(factory, "verifies_artifacts", False):
            for record in factory.artifacts(m, codes, precision=precision, **options):
                manifest_mod.verify_file(directory, record)
        instance: Backend = factory(directory, m, codes, precision=precision, **options)
        try:
            sw = cls(directory, m, instance, codes, segmented=segmented)
            sw.mode_reason = why
            if warmup:
                sw.warmup()
        except BaseException:
            instance.close()
            raise
        sw._opened_s = time.perf_counter() - t0
        return sw

    @staticmethod
    def _codes(m: dict[str, Any], subnets: str | Sequence[str], segmented: bool) -> list[str]:
        present = None
        if segmented:  # segments chain into every sub-network
            seg = manifest_mod.running_segments(m).get("subnets", {})
            present = {c: seg.get(c, {}) for c in subnet.all_codes(int(m["num_stages"]))}
        return manifest_mod.resolve_codes(m, subnets, present)

    def warmup(self) -> None:
        """Run every sub-network once, so first-run costs are paid now, not at a switch."""
        batch = np.zeros((self._static_batch or 1, *self._chw), dtype=np.float32)
        backend = self._require_open()
        for code in self.codes:
            backend.warmup(code, batch)

    # ------------------------------------------------------------------ switching

    @property
    def active(self) -> str:
        """The canonical code the next ``infer`` will run."""
        return self._active

    def canonical(self, code: str) -> str:
        """``code`` in any accepted spelling -> its canonical form, if it is open here."""
        hit = self._aliases.get(code) if isinstance(code, str) else None
        if hit is not None:
            return hit
        if not isinstance(code, str):
            raise AdnError(f"A sub-network code is a string such as {subnet.examples(self.num_stages)[0]!r}, "
                           f"not {type(code).__name__}.")
        canon = subnet.parse_code(code, self.num_stages, self.arch)
        if canon not in self.codes:
            raise AdnError(f"Sub-network {canon} is not open in this switcher (open: {', '.join(self.codes)}).",
                           f"Open it: EngineSwitcher.open(DIR, subnets=[..., {canon!r}]) or subnets='all'.")
        if len(self._aliases) < 4096:
            self._aliases[code] = canon
        return canon

    def switch(self, code: str) -> str:
        """Make ``code`` the sub-network of every ``infer`` that starts from now on.

        Takes microseconds, allocates nothing of note and never waits for a running
        inference (which finishes on the code it began with). A bad code raises
        :class:`AdnError` and leaves the previous sub-network active.
        """
        canon = self.canonical(code)
        if self._closed:
            raise _closed_error()
        self._active = canon
        return canon

    @contextlib.contextmanager
    def using(self, code: str) -> Iterator[str]:
        """Run a block on ``code``, then restore the sub-network active before it.

        The switch is global (other threads' inferences see it too) and the restore
        overwrites any switch made by another thread inside the block.
        """
        previous = self._active
        canon = self.switch(code)
        try:
            yield canon
        finally:
            if not self._closed:
                self._active = previous

    # ------------------------------------------------------------------ inference

    @property
    def engine(self) -> Backend:
        """The backend object (for its own diagnostics, e.g. ``verify_sharing``)."""
        return self._require_open()

    def _require_open(self) -> Backend:
        backend = self._backend
        if backend is None or self._closed:
            raise _closed_error()
        return backend

    def _check(self, batch: Any) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise AdnError(f"infer takes a numpy array (float32, NCHW), not {type(batch).__name__}.",
                           "Convert with np.asarray(x, dtype=np.float32).")
        if batch.dtype != np.float32:
            raise AdnError(f"infer takes float32 input, not {batch.dtype}.",
                           "Normalise with the manifest's mean/std and convert with batch.astype(np.float32).")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self._chw or batch.shape[0] < 1:
            want = f"({self._static_batch or 'N'}, {', '.join(map(str, self._chw))})"
            raise AdnError(f"infer got an input of shape {tuple(batch.shape)}, but {self.arch} in this directory takes "
                           f"{want} (NCHW).", "Resize/transpose the image batch to that shape.")
        if self._static_batch is not None and batch.shape[0] != self._static_batch:
            raise AdnError(f"These graphs were exported with a static batch of {self._static_batch}, "
                           f"but the input has batch {batch.shape[0]}.", "Re-export with a dynamic batch.")
        if not batch.flags.c_contiguous:
            return np.ascontiguousarray(batch)
        return batch

    def infer_tagged(self, batch: np.ndarray, subnet: str | None = None) -> tuple[str, np.ndarray]:
        """Like :meth:`infer`, and also says which sub-network produced the logits."""
        code = self._active if subnet is None else self.canonical(subnet)  # read once: this call's sub-network
        batch = self._check(batch)
        with self._flight_lock:
            if self._closed:
                raise _closed_error()
            self._in_flight += 1
            backend = self._backend
        try:
            assert backend is not None
            return code, backend.run(code, batch)
        finally:
            with self._flight_lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.notify_all()

    def infer(self, batch: np.ndarray, subnet: str | None = None) -> np.ndarray:
        """Logits (float32 ``[N, num_classes]``) of the active sub-network for a float32
        NCHW batch, normalised as in training; ``subnet`` runs another open one for
        this call only, without switching."""
        return self.infer_tagged(batch, subnet)[1]

    # ------------------------------------------------------------------ policies

    @property
    def policy(self) -> Any:
        """The :class:`~adn_edge.runtime.policies.Policy` over the open sub-networks,
        read from the directory's bench/eval results (once; ``reload_policy`` re-reads)."""
        if self._policy is None:
            self.reload_policy()
        return self._policy

    def reload_policy(self, **kwargs: Any) -> Any:
        from adn_edge.runtime.policies import Policy

        kwargs.setdefault("precision", getattr(self._backend, "precision", None))
        self._policy = Policy.from_directory(self.directory, self.manifest, self.codes,
                                             backend=self.backend_name, **kwargs)
        return self._policy

    def fastest_within(self, latency_ms: float, **kwargs: Any) -> str:
        """The most accurate open sub-network whose benchmarked latency fits ``latency_ms``
        (see :mod:`adn_edge.runtime.policies`); it does not switch."""
        return str(self.policy.fastest_within(latency_ms, **kwargs))

    def most_accurate_within(self, latency_ms: float | None = None, energy_mj: float | None = None,
                             **kwargs: Any) -> str:
        return str(self.policy.most_accurate_within(latency_ms=latency_ms, energy_mj=energy_mj, **kwargs))

    def pareto(self) -> list[str]:
        return list(self.policy.ladder())

    # ------------------------------------------------------------------ life cycle

    def describe(self) -> dict[str, Any]:
        backend = self._backend
        return {"directory": str(self.directory), "arch": self.arch, "backend": self.backend_name,
                "segmented": self.segmented, "mode_reason": getattr(self, "mode_reason", None), "subnets": list(self.codes), "active": self._active,
                "input": {"name": self.input_name, "shape": [self._static_batch, *self._chw],
                          "mean": self.manifest["input"].get("mean"), "std": self.manifest["input"].get("std")},
                "num_classes": self.manifest["num_classes"], "opened_s": round(self._opened_s, 3),
                "closed": self._closed, "engine": backend.describe() if backend is not None else None}

    def close(self, timeout: float | None = None) -> None:
        """Refuse new inferences, wait for those in flight, release the backend. Idempotent.

        With a ``timeout`` that expires first, nothing is released (the running
        inferences read that memory) and RuntimeError says so; call again later.
        """
        with self._flight_lock:
            if self._backend is None:
                return
            self._closed = True
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout):
                raise RuntimeError(f"{self._in_flight} inference(s) still running after {timeout} s; "
                                   "the backend was not released")
            backend, self._backend = self._backend, None
        backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> EngineSwitcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"active={self._active}"
        return (f"EngineSwitcher({self.arch}, backend={self.backend_name}, {len(self.codes)} sub-networks, "
                f"{state})")
