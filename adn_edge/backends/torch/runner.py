"""PyTorch backend: every sub-network materialised from one resident ADN model.

For GPU hosts without TensorRT, and as the reference runtime in tests. It does not
read the ONNX graphs: it loads the checkpoint the manifest records (checked against
the sha256 recorded at export, so it serves the weights the graphs were made
from) or takes an in-memory model, and materialises each requested sub-network
with :func:`adn_edge.materialize.materialize` and **one** shared
:class:`~adn_edge.materialize.Folder`. So all sub-networks reference the parent's
own modules where nothing is folded (the classifier, LayerNorms) and share every
folded convolution, created once per stage skip-state: the memory is the parent
model plus one folded copy of the convolutions per state, not 2^S models
(:meth:`TorchBackend.tensor_report` counts it).

Optional CUDA graphs (``cuda_graphs=True`` on a GPU) capture each sub-network at
``graph_batch`` into one memory pool; the graphs share that pool, so replays are
serialised by a lock that only ``run`` takes (``switch`` never does). Other batch
sizes run eagerly. This part is written against PyTorch's documented CUDA-graph
API and was not exercised on a GPU in this repository's CI.

torch is imported inside the backend only: ``import adn_edge.runtime`` stays
torch-free.
"""

from __future__ import annotations

import copy
import importlib.util
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.runtime.backend import Backend, register_backend
from adn_edge.fileio import check_threads

WEIGHT_CHOICE = {"model_ema": "ema", "model": "model"}


def _available() -> str | None:
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else "PyTorch is not installed (pip install torch)."


def _resolve_checkpoint(directory: Path, recorded: str | None, override: str | Path | None) -> Path:
    if override is not None:
        p = Path(override)
        if not p.exists():
            raise AdnError(f"The checkpoint {str(p)!r} does not exist.")
        return p
    if not recorded:
        raise AdnError(f"The manifest in {str(directory)!r} records no checkpoint path (it was exported from an "
                       "in-memory model), so the torch backend has nothing to load.",
                       "Pass model=<the ADN model> or checkpoint=PATH to EngineSwitcher.open.")
    p = Path(recorded)
    for candidate in ([p] if p.is_absolute() else [directory / p, Path.cwd() / p, directory / p.name]):
        if candidate.exists():
            return candidate
    raise AdnError(f"The checkpoint {recorded!r} recorded in the manifest of {str(directory)!r} cannot be found.",
                   "Pass checkpoint=PATH (or model=...) to EngineSwitcher.open.")


@register_backend("torch", available=_available, priority=10)
class TorchBackend(Backend):
    """Options: ``model`` (an in-memory ADN model; else the manifest's checkpoint),
    ``checkpoint`` (path overriding the recorded one), ``device`` (auto | cpu | cuda |
    cuda:N | N), ``precision`` (fp32; fp16 on CUDA), ``threads`` (torch intra-op
    threads, process-wide), ``cuda_graphs``, ``graph_batch``."""

    verifies_artifacts = True  # reads no ONNX file; the checkpoint is checked against its recorded sha256

    @classmethod
    def artifacts(cls, manifest: dict[str, Any], codes: Sequence[str], **options: Any) -> list[dict[str, Any]]:
        return []

    @classmethod
    def unready(cls, manifest: Mapping[str, Any] | None, device: str | None) -> str | None:
        if device != "cuda":
            return None
        import torch

        return None if torch.cuda.is_available() else "PyTorch sees no CUDA GPU"

    def __init__(self, directory: Path, manifest: dict[str, Any], codes: Sequence[str], *, model: Any = None,
                 checkpoint: str | Path | None = None, device: str | int = "cpu", precision: str | None = None,
                 threads: int | None = None, cuda_graphs: bool = False, graph_batch: int = 1) -> None:
        super().__init__(directory, manifest, codes)
        import torch

        from adn_edge.materialize import materialize

        from adn_edge.models.folding import Folder

        self._torch = torch
        if check_threads(threads, "threads", allow_zero=True):
            torch.set_num_threads(int(threads))
        self.device = self._device(device)
        self.precision = (precision or "fp32").lower()
        if self.precision not in ("fp32", "fp16") or (self.precision == "fp16" and self.device.type != "cuda"):
            raise AdnError(f"The torch backend runs fp32 (and fp16 on CUDA), not {precision!r} on {self.device}.")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.source = "in-memory" if model is not None else "checkpoint"
        model = self._load(model, checkpoint)
        self.model = model
        self.folder = Folder(model)
        self._modules = {code: materialize(model, code, self.folder).eval() for code in self.codes}
        self._graph_lock = threading.Lock()
        self._graphs: dict[tuple[str, int], Any] = {}
        self.graph_notes: list[str] = []
        if cuda_graphs:
            if self.device.type != "cuda":
                raise AdnError("cuda_graphs=True needs a CUDA device.", "Pass device='cuda' or drop cuda_graphs.")
            self._capture_all(int(graph_batch))

    def _device(self, device: str | int) -> Any:
        torch = self._torch
        if isinstance(device, int) and not isinstance(device, bool):
            device = f"cuda:{device}"
        text = str(device).lower()
        if text == "auto":
            text = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise AdnError(f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise AdnError(f"device={device!r} was asked for, but this PyTorch sees no CUDA GPU.")
        if dev.type not in ("cpu", "cuda"):
            raise AdnError(f"The torch backend runs on cpu or cuda, not {device!r}.")
        return dev

    def _load(self, model: Any, checkpoint: str | Path | None) -> Any:
        m = self.manifest
        if model is None:
            from adn_edge import checkpoint as ckpt_mod
            from adn_edge.fileio import sha256_file

            source = m.get("source") or {}
            path = _resolve_checkpoint(self.directory, source.get("path"), checkpoint)
            recorded = source.get("sha256")
            if recorded and sha256_file(path) != recorded:
                raise AdnError(f"The checkpoint {str(path)!r} does not match the sha256 recorded in the manifest "
                               "at export: the graphs in this directory were made from other weights.",
                               "Pass the checkpoint they were exported from, or re-export.")
            model, _ = ckpt_mod.load(path, arch=m["arch"], num_classes=m["num_classes"],
                                     weights=WEIGHT_CHOICE.get(str(source.get("weights")), "auto"))
        else:
            if getattr(model, "arch", None) != m["arch"] or getattr(model, "num_classes", None) != m["num_classes"]:
                raise AdnError(f"The model passed is {getattr(model, 'arch', type(model).__name__)} with "
                               f"{getattr(model, 'num_classes', '?')} classes, but the directory holds "
                               f"{m['arch']} with {m['num_classes']} classes.")
        param = next(model.parameters())
        if param.device != self.device or param.dtype != self.dtype:
            # Never move the caller's model under their feet: one copy, then shared.
            model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        model.eval()
        model.requires_grad_(False)
        return model

    def _capture_all(self, batch: int) -> None:
        torch = self._torch
        chw = [int(d) for d in self.manifest["input"]["shape"][1:]]
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        for code, module in self._modules.items():
            static_in = torch.zeros([batch, *chw], device=self.device, dtype=self.dtype)
            try:
                with torch.inference_mode():
                    stream.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(stream):
                        for _ in range(3):  # warm up kernels/allocator outside the capture
                            module(static_in)
                    torch.cuda.current_stream(self.device).wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        static_out = module(static_in)
            except RuntimeError as exc:
                self.graph_notes.append(f"{code}: not captured ({str(exc).splitlines()[0]}); runs eagerly")
                continue
            self._graphs[(code, batch)] = (graph, static_in, static_out)

    def run(self, code: str, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if not batch.flags.writeable:
            batch = batch.copy()  # torch.from_numpy wants writable memory
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            graph = self._graphs.get((code, batch.shape[0])) if self._graphs else None
            if graph is not None:
                g, static_in, static_out = graph
                with self._graph_lock:  # one pool shared by all graphs: one replay at a time
                    static_in.copy_(x.to(self.device, self.dtype, non_blocking=True))
                    g.replay()
                    out = static_out.float().cpu()
                return np.asarray(out.numpy())
            if self.device.type != "cpu" or self.dtype != torch.float32:
                x = x.to(self.device, self.dtype)
            if self.device.type != "cuda":
                return np.asarray(self._modules[code](x).float().numpy())
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y = self._modules[code](x)
            end.record()
            out = np.asarray(y.float().cpu().numpy())  # synchronises
            self.last_device_ms = float(start.elapsed_time(end))
            return out

    def tensor_report(self) -> dict[str, int]:
        """Bytes of distinct tensors held by all materialised sub-networks, against
        what 2^S separate copies would hold and what the parent model holds."""
        seen: dict[int, int] = {}
        referenced = 0
        for module in self._modules.values():
            per_module: dict[int, int] = {}
            for t in list(module.parameters()) + list(module.buffers()):
                per_module[t.data_ptr()] = t.numel() * t.element_size()
            referenced += sum(per_module.values())
            seen.update(per_module)
        parent = {t.data_ptr(): t.numel() * t.element_size()
                  for t in list(self.model.parameters()) + list(self.model.buffers())}
        return {"bytes_unique": sum(seen.values()), "bytes_referenced": referenced,
                "bytes_parent_model": sum(parent.values()),
                "bytes_shared_with_parent": sum(v for k, v in seen.items() if k in parent)}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"device": str(self.device), "precision": self.precision, "source": self.source,
                  "torch": self._torch.__version__, "tensors": self.tensor_report(),
                  "cuda_graphs": sorted({f"{c}@{b}" for c, b in self._graphs}), "notes": list(self.graph_notes)})
        return d

    def close(self) -> None:
        self._graphs = {}
        self._modules = {}
