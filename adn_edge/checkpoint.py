"""Loading and saving ADN weights, safely.

Accepted inputs (docs/official-format.md section 6):

* the official released weights: a plain state dict (``.pth``);
* official training checkpoints (``checkpoint.pth``, ``model_N.pth``): a dict with
  ``model`` and, with ``--model-ema``, ``model_ema`` (an ``AveragedModel`` state:
  ``n_averaged`` + ``module.``-prefixed keys), plus optimizer state and ``args``
  (an ``argparse.Namespace``);
* DDP / ``torch.compile`` state dicts (``module.`` / ``_orig_mod.`` prefixes), and
  ``{"state_dict": ...}`` containers;
* safetensors files, and our own format: safetensors whose metadata carries an
  ``adn_edge`` JSON header (arch, num_classes, input size, mean/std).

Pickles are read with ``torch.load(weights_only=True)``, allow-listing only
``argparse.Namespace`` (harmless data, and the one class official training
checkpoints need). Anything that would need code execution is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adn_edge import __version__
from adn_edge.errors import AdnError
from adn_edge.fileio import atomic_path, sha256_file
from adn_edge.models import ADNModel, create_model, get_spec, list_models
from adn_edge.fileio import open_regular

HEADER_KEY = "adn_edge"
PREFIXES = ("module.", "_orig_mod.")
HEAD_KEYS = ("fc.weight", "classifier.1.weight", "heads.head.weight", "head.weight")
WEIGHT_CHOICES = ("auto", "ema", "model")


@dataclass
class Checkpoint:
    """Bare weights plus what we know about where they came from."""

    state_dict: dict[str, torch.Tensor]
    path: str
    sha256: str
    container: str
    """'plain', 'training', 'state_dict', 'safetensors' or 'adn-edge'."""
    weights: str
    """Which weights inside the container: 'model_ema', 'model', 'state_dict' or 'plain'."""
    header: dict[str, Any] = field(default_factory=dict)
    """Our format's header (arch, num_classes, input_size, mean, std), else empty."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Training-state entries (epoch, optimizer, ...) when the container has them."""

    @property
    def num_classes(self) -> int | None:
        if "num_classes" in self.header:
            return int(self.header["num_classes"])
        for k in HEAD_KEYS:
            t = self.state_dict.get(k)
            if t is not None and t.ndim == 2:
                return int(t.shape[0])
        return None

    def source_record(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "container": self.container, "weights": self.weights}


def _strip(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop EMA bookkeeping and wrapper prefixes; keep tensors only."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k == "n_averaged" or not isinstance(v, torch.Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AdnError(
            f"{str(path)!r} is a pickle that needs code execution to load ({str(exc).splitlines()[0]}); "
            "adn-edge loads checkpoints with weights_only=True and never runs code from a file.",
            "Re-save the weights as a plain state dict (torch.save(model.state_dict(), F)) or as "
            "safetensors, e.g. `adn-edge train` writes both.",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AdnError(
            f"{str(path)!r} cannot be read as a PyTorch checkpoint ({str(exc).splitlines()[0]}); "
            "the file is truncated, corrupt or not a checkpoint.",
            "Download or copy it again and compare its size/sha256 with the original.",
        ) from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdnError(f"{str(path)!r} cannot be read as safetensors ({exc}); the file is truncated or corrupt.",
                       "Copy it again and compare its sha256 with the original.") from None
    header: dict[str, Any] = {}
    if HEADER_KEY in meta:
        try:
            header = json.loads(meta[HEADER_KEY])
        except json.JSONDecodeError:
            raise AdnError(f"{str(path)!r} has a damaged adn-edge header.", "Re-save the checkpoint.") from None
    return sd, header


def read(path: str | os.PathLike[str], weights: str = "auto") -> Checkpoint:
    """Read any supported checkpoint into bare weights (see module docstring).

    ``weights``: from a training checkpoint holding both, ``auto``/``ema`` take
    ``model_ema`` and ``model`` takes ``model``.
    """
    if weights not in WEIGHT_CHOICES:
        raise AdnError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}, not {weights!r}.")
    p = Path(path)
    if not p.exists():
        raise AdnError(f"The checkpoint {str(p)!r} does not exist.", "Check the path.")
    if p.is_dir():
        raise AdnError(f"{str(p)!r} is a directory, not a checkpoint file.",
                       "Pass a .pth/.pt/.safetensors file (for a model directory use `adn-edge info`).")
    try:
        with open_regular(p, "checkpoint") as f:  # a FIFO or device is refused, never waited on
            magic = f.read(8)
    except OSError as exc:
        raise AdnError(f"The checkpoint {str(p)!r} cannot be read: {exc.strerror}.") from None
    if not magic:
        raise AdnError(f"The checkpoint {str(p)!r} is empty (0 bytes).", "Copy it again.")
    digest = sha256_file(p)
    if p.suffix == ".safetensors" or (not magic.startswith(b"PK") and not magic.startswith(b"\x80")):
        sd, header = _read_safetensors(p)
        container = "adn-edge" if header else "safetensors"
        return Checkpoint(_strip(sd), str(p), digest, container, "plain", header)
    obj = _torch_load(p)
    return _unwrap(obj, p, digest, weights)


def _unwrap(obj: Any, p: Path, digest: str, weights: str) -> Checkpoint:
    if _is_state_dict(obj):
        return Checkpoint(_strip(obj), str(p), digest, "plain", "plain")
    if isinstance(obj, dict):
        extra = {k: v for k, v in obj.items() if k in ("epoch", "args") or k == HEADER_KEY}
        header = obj.get(HEADER_KEY) if isinstance(obj.get(HEADER_KEY), dict) else {}
        order = ["model_ema", "model"] if weights in ("auto", "ema") else ["model", "model_ema"]
        for key in [*order, "state_dict"]:
            if _is_state_dict(obj.get(key)):
                if weights == "ema" and key != "model_ema":
                    raise AdnError(f"{str(p)!r} holds no EMA weights ('model_ema'), but --weights ema was asked for.",
                                   "Use --weights model (or auto).")
                container = "state_dict" if key == "state_dict" else "training"
                return Checkpoint(_strip(obj[key]), str(p), digest, container, key, header or {}, extra)
    raise AdnError(
        f"{str(p)!r} is a PyTorch file but holds no state dict (expected a dict of tensors, or a training "
        "checkpoint with 'model', 'model_ema' or 'state_dict').",
        "Pass the weights file the training run wrote.",
    )


def _mismatch_report(model: torch.nn.Module, sd: dict[str, torch.Tensor], limit: int = 3) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} (checkpoint {list(sd[k].shape)}, model {list(own[k].shape)})"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, first: {', '.join(missing[:limit])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:limit])}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, first: {'; '.join(shapes[:limit])}")
    return "; ".join(parts)


def guess_arch(sd: dict[str, torch.Tensor]) -> str | None:
    """The registered architecture whose tensors (names *and* shapes) equal the
    checkpoint's, if exactly one. Names alone do not tell ResNet-50 from a narrower
    ResNet of the same depth; the shapes do. The head is built with the checkpoint's
    class count (its classifier's rows)."""
    keys = set(sd)
    head = next((sd[k] for k in HEAD_KEYS if k in sd and getattr(sd[k], "ndim", 0) == 2), None)
    classes = int(head.shape[0]) if head is not None else 2
    hits = []
    for arch in list_models():
        with torch.device("meta"):
            m = create_model(arch, num_classes=classes)
        own = m.state_dict()
        if set(own) == keys and all(tuple(own[k].shape) == tuple(getattr(sd[k], "shape", ())) for k in keys):
            hits.append(arch)
    return hits[0] if len(hits) == 1 else None


def build_model(ckpt: Checkpoint, arch: str | None = None, num_classes: int | None = None) -> ADNModel:
    """Instantiate ``arch`` (or the header's) and load the weights strictly."""
    arch = arch or ckpt.header.get("arch")
    if arch is None:
        arch = guess_arch(ckpt.state_dict)
        if arch is None:
            raise AdnError(f"Cannot tell which architecture {ckpt.path!r} is.",
                           f"Pass --arch (one of: {', '.join(list_models())}).")
    spec = get_spec(arch)
    inferred = ckpt.num_classes
    if num_classes is not None and inferred is not None and num_classes != inferred:
        raise AdnError(f"--num-classes {num_classes} was given but the checkpoint's head has {inferred} classes.",
                       "Drop --num-classes (it is inferred from the head) or pass the matching checkpoint.")
    model = create_model(arch, num_classes=num_classes or inferred or spec.num_classes)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError:
        detail = _mismatch_report(model, ckpt.state_dict)
        guess = guess_arch(ckpt.state_dict)
        hint = f"It looks like a {guess} checkpoint: pass --arch {guess}." if guess and guess != arch else (
            "Check --arch and that the file is an ADN checkpoint (official ADN or adn-edge format).")
        raise AdnError(f"The checkpoint {ckpt.path!r} does not fit architecture {arch!r}: {detail}.", hint) from None
    return model.eval()


def load(path: str | os.PathLike[str], arch: str | None = None, num_classes: int | None = None,
         weights: str = "auto") -> tuple[ADNModel, Checkpoint]:
    """Read a checkpoint and return the loaded model (eval mode) and its description."""
    ckpt = read(path, weights)
    return build_model(ckpt, arch, num_classes), ckpt


def header_for(model: ADNModel, **extra: Any) -> dict[str, Any]:
    spec = get_spec(model.arch)
    return {"format": "adn-edge", "version": __version__, "arch": model.arch, "num_classes": model.num_classes,
            "input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std), **extra}


def save(model: ADNModel, path: str | os.PathLike[str], fmt: str = "adn-edge", **extra: Any) -> Path:
    """Write weights atomically: ``adn-edge`` (safetensors + header) or ``official`` (plain .pth)."""
    p = Path(path)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(p) as tmp:
        if fmt == "adn-edge":
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={HEADER_KEY: json.dumps(header_for(model, **extra))})
        elif fmt == "official":
            torch.save(sd, tmp)
        else:
            raise AdnError(f"Unknown checkpoint format {fmt!r}.", "Use 'adn-edge' or 'official'.")
    return p
