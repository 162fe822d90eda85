"""The embedded default model: a small ADN that ships inside the package.

``resnet_tiny_fashion.safetensors`` is a resnet_tiny ADN (4 skippable stages, 16
sub-networks) trained by ``adn-edge train`` on Fashion-MNIST at 32x32, in our
checkpoint format (safetensors + header). ``resnet_tiny_fashion.json`` beside it
records the exact command that reproduced it (:mod:`.make_embedded`), how long it
took, and the top-1/top-5 of every sub-network on the test split of
``builtin:fashion``, with and without per-sub-network BatchNorm recalibration.
``fashion_mnist_subset.npz`` is that built-in dataset (3,000 Fashion-MNIST images,
MIT licence). ``adn-edge demo`` starts from both, so the first README command needs
no download and no training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EMBEDDED_ARCH = "resnet_tiny"
EMBEDDED_NAME = "resnet_tiny_fashion"
EMBEDDED_DATASET = "fashion"
"""The built-in dataset the embedded model is evaluated and recalibrated on."""
DATA_DIR = Path(__file__).resolve().parent


def embedded_path() -> Path:
    """Path of the embedded checkpoint (our format)."""
    return DATA_DIR / f"{EMBEDDED_NAME}.safetensors"


def embedded_info() -> dict[str, Any]:
    """The embedded model's record: command, dataset, per-sub-network accuracies."""
    from adn_edge.fileio import read_json

    info: dict[str, Any] = read_json(DATA_DIR / f"{EMBEDDED_NAME}.json", "embedded model record")
    return info


def load_embedded() -> tuple[Any, Any]:
    """``(model, checkpoint)`` of the embedded ADN, loaded strictly, in eval mode."""
    from adn_edge import checkpoint
    from adn_edge.errors import AdnError

    path = embedded_path()
    if not path.is_file():
        raise AdnError(f"The embedded model {str(path)!r} is missing from this installation.",
                       "Reinstall adn-edge (the wheel ships adn_edge/data/*.safetensors).")
    return checkpoint.load(path, arch=EMBEDDED_ARCH)


__all__ = ["EMBEDDED_ARCH", "EMBEDDED_DATASET", "EMBEDDED_NAME", "embedded_info", "embedded_path", "load_embedded"]
