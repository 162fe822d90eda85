"""Which engine the runtime may load: precision choice and the identity check.

The runtime side of the manifest's engine records, apart from the build planning so
that the runner imports nothing of the builder. An engine loads only on the
TensorRT version and GPU that built it; this refuses any other before TensorRT sees
it (docs/tensorrt.md, "Engine identity").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from adn_edge.backends.tensorrt.env import Environment
from adn_edge.backends.tensorrt.options import PRECISIONS
from adn_edge.errors import AdnError


def check_engine_compatible(record: Mapping[str, Any], env: Environment, code: str) -> None:
    """Refuse an engine built for another TensorRT or GPU, before TensorRT sees it.

    TensorRT itself rejects a plan from another version with a cryptic
    deserialisation error, and may *accept* one from another GPU of similar compute
    capability and run it with tactics tuned for a different chip.
    """
    name = record.get("path", f"the {code} engine")
    built_trt = record.get("tensorrt_version")
    if built_trt != env.tensorrt_version:
        raise AdnError(
            f"{name} was built with TensorRT {built_trt}, but this machine has TensorRT {env.tensorrt_version}; "
            "TensorRT engines only load on the version that built them.",
            "Rebuild on this device: `adn-edge build DIR` (engines are not portable; copy the ONNX directory "
            "and build where you run).",
        )
    built_gpu, built_cc = record.get("gpu"), str(record.get("compute_capability"))
    if built_cc != env.compute_capability or built_gpu != env.gpu:
        raise AdnError(
            f"{name} was built for {built_gpu} (compute capability {built_cc}), but this machine has "
            f"{env.gpu} (compute capability {env.compute_capability}); engines are specific to the GPU they "
            "were built on.",
            "Rebuild on this device: `adn-edge build DIR`.",
        )


PRECISION_PREFERENCE = ("fp16", "best", "int8", "fp32")
"""What ``precision=None`` opens: the usual Jetson choice first."""


def choose_precision(manifest: Mapping[str, Any], codes: Sequence[str], precision: str | None) -> str:
    """The engine precision to open for ``codes`` (all codes must have it)."""
    tables = {code: (manifest["subnets"].get(code) or {}).get("engines") or {} for code in codes}
    return pick_precision(tables, precision, "sub-network(s)",
                          lambda p, first: f"`adn-edge build DIR --precision {p} --subnet {first}` (or --subnet all)")


def pick_precision(tables: Mapping[str, Mapping[str, Any]], precision: str | None, noun: str,
                   build_cmd: Callable[[str, str], str]) -> str:
    """``precision`` if every table (engine records by precision, one per unit) has it,
    else an error naming the units that lack it; None picks by :data:`PRECISION_PREFERENCE`."""
    names = list(tables)
    if precision is not None:
        p = str(precision).lower()
        if p not in PRECISIONS:
            raise AdnError(f"{precision!r} is not an engine precision ({', '.join(PRECISIONS)}).")
        missing = [n for n in names if p not in tables[n]]
        if missing:
            raise AdnError(f"No {p} TensorRT engine for {noun + ' ' if noun else ''}{', '.join(missing)} in this "
                           "model directory.", f"Build them with {build_cmd(p, missing[0])}.")
        return p
    for p in PRECISION_PREFERENCE:
        if all(p in tables[n] for n in names):
            return p
    raise AdnError(f"No TensorRT engine precision is built for all of {', '.join(names)}.",
                   f"Build engines with {build_cmd('fp16', names[0] if names else 'all')}.")


def engine_for(manifest: Mapping[str, Any], code: str, precision: str) -> Mapping[str, Any]:
    entry = manifest["subnets"].get(code)
    if entry is None:
        raise AdnError(f"Sub-network {code} is not in this model directory.")
    rec = (entry.get("engines") or {}).get(precision)
    if rec is None:
        raise AdnError(f"Sub-network {code} has no {precision} engine.",
                       f"Build it with `adn-edge build DIR --precision {precision} --subnet {code}`.")
    return cast("Mapping[str, Any]", rec)
