"""The runtime robots embed: every sub-network resident, switched in microseconds.

::

    from adn_edge.runtime import EngineSwitcher, DeadlineGovernor

    with EngineSwitcher.open("engines/resnet50", backend="auto", subnets="all") as sw:
        sw.switch("0101")                       # next inference runs 0101
        logits = sw.infer(batch)                # float32 NCHW in, float32 logits out
        code = sw.fastest_within(latency_ms=8)  # most accurate that fits, from bench/eval results

Importing this package needs numpy only (docs/runtime.md): the backends
(:mod:`adn_edge.backends`) are named in :data:`~adn_edge.runtime.backend.BUILTIN_BACKENDS`
and imported on first use of the registry; each imports its inference library
(onnxruntime, tensorrt, torch) when constructed. A backend whose module fails to
import is reported by :func:`backend_problems` instead of breaking the runtime.
"""

from __future__ import annotations

from adn_edge.runtime.backend import (
    Backend,
    available_backends,
    backend_problems,
    register_backend,
    resolve_backend,
)
from adn_edge.runtime.governor import DeadlineGovernor
from adn_edge.runtime.policies import Candidate, Policy
from adn_edge.runtime.switcher import EngineSwitcher

__all__ = [
    "Backend",
    "Candidate",
    "DeadlineGovernor",
    "EngineSwitcher",
    "Policy",
    "available_backends",
    "backend_problems",
    "register_backend",
    "resolve_backend",
]
