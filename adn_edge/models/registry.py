"""Architecture registry, in the manner of timm.

Each family module decorates its constructors with :func:`register_model`; every
other part of the toolkit (CLI, export, tests) reads this one table, so adding an
architecture is one file and one decorator. Tests parametrise over
:func:`list_models`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adn_edge.errors import AdnError

if TYPE_CHECKING:
    from adn_edge.models.base import ADNModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., ADNModel]
    num_stages: int
    input_size: int = 224
    num_classes: int = 1000
    official: bool = True
    """True: key-compatible with the official research code (strict loading)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    norm: str = "batchnorm"
    """'batchnorm' (folded into convs on export) or 'layernorm' (twin chosen statically)."""
    description: str = ""
    interpolation: str = "bilinear"
    """Resampling of the evaluation resize (the official Swin-T evaluation uses bicubic)."""
    crop_pct: float | None = None
    """Evaluation crop fraction: resize the shorter side to ``size / crop_pct``, centre-crop
    ``size`` (official ImageNet models: 0.875, i.e. 256 -> 224). None: 0.875 for official
    models, 1.0 (no crop) for ours."""

    def eval_resize(self, input_size: int | None = None) -> int:
        """Shorter-side resize before the centre crop, for an input of ``input_size``."""
        size = input_size or self.input_size
        pct = self.crop_pct if self.crop_pct is not None else (0.875 if self.official else 1.0)
        return int(size / pct)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, **spec: Any) -> Callable[[Callable[..., ADNModel]], Callable[..., ADNModel]]:
    def deco(fn: Callable[..., ADNModel]) -> Callable[..., ADNModel]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name=name, factory=fn, **spec)
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the package imports every family module, which fills the registry.
    import adn_edge.models  # noqa: F401


def list_models(official: bool | None = None) -> list[str]:
    _ensure_loaded()
    return [n for n, s in _REGISTRY.items() if official is None or s.official == official]


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise AdnError(f"Unknown architecture {name!r}.", f"Known architectures: {known}.") from None


def create_model(name: str, num_classes: int | None = None, **kwargs: Any) -> ADNModel:
    """Build an architecture by registry name, in eval mode, randomly initialised."""
    spec = get_spec(name)
    model = spec.factory(num_classes=num_classes or spec.num_classes, **kwargs)
    model.arch = name
    return model.eval()
