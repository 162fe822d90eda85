"""adn-edge: Adaptive Depth Networks on edge devices.

The package is a pipeline, one folder per step::

    checkpoint -> models -> materialize -> export -> build -> runtime -> bench

Importing ``adn_edge`` is cheap and does not import torch, so that a robot that
ships only :mod:`adn_edge.runtime` (numpy + ONNX Runtime or TensorRT) can use it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
