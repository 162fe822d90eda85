"""The runtime robots embed: every sub-network resident, switched in microseconds.

::

    from adn_edge.runtime import EngineSwitcher, DeadlineGovernor

    with EngineSwitcher.open("engines/resnet50", backend="auto", subnets="all") as sw:
        sw.switch("0101")                       # next inference runs 0101
        logits = sw.infer(batch)                # float32 NCHW in, float32 logits out
        code = sw.fastest_within(latency_ms=8)  # most accurate that fits, from bench/eval results

Importing this package needs numpy only (CONTRACTS.md section 5): backends import
their inference library (onnxruntime, tensorrt, torch) when constructed, and
``available_backends()`` asks for packages without importing them. Importing it
registers every backend shipped with adn-edge; one whose module fails to import
is reported by :func:`backend_problems` instead of breaking the runtime.
"""

from __future__ import annotations

import importlib

from adn_edge.runtime import onnxruntime_backend, segmented, torch_backend  # noqa: F401  (register)
from adn_edge.runtime.backend import Backend, available_backends, register_backend
from adn_edge.runtime.governor import DeadlineGovernor
from adn_edge.runtime.policies import Candidate, Policy, pareto
from adn_edge.runtime.switcher import _IMPORT_PROBLEMS, EngineSwitcher, backend_problems

for _name, _module in (("tensorrt", "adn_edge.runtime.tensorrt_backend"),):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:  # the module exists but a dependency of it is missing
            _IMPORT_PROBLEMS[_name] = f"{_module} needs {_exc.name!r}, which is not installed"
    except ImportError as _exc:  # never let an optional backend break the runtime import
        _IMPORT_PROBLEMS[_name] = f"{_module} failed to import: {_exc}"

__all__ = [
    "Backend",
    "Candidate",
    "DeadlineGovernor",
    "EngineSwitcher",
    "Policy",
    "available_backends",
    "backend_problems",
    "pareto",
    "register_backend",
]
