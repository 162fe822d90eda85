"""ADN architectures. Importing this package registers every family."""

from adn_edge.models import resnet  # noqa: F401  (registers)
from adn_edge.models.base import ADNModel
from adn_edge.models.registry import ModelSpec, create_model, get_spec, list_models, register_model

for _family in ("mobilenetv2", "vit", "swin"):
    try:
        __import__(f"adn_edge.models.{_family}")
    except ModuleNotFoundError as _exc:  # family not written yet
        if _exc.name != f"adn_edge.models.{_family}":
            raise

__all__ = ["ADNModel", "ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
