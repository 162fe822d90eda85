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


MEMORY_TOLERANCE = 0.10
"""Two GPUs of one model report slightly different memory across driver releases (a
Jetson's carve-outs move between JetPacks); a tenth apart is another module (an
Orin Nano 8 GB reports ~7.4 GiB, an Orin NX 16 GB ~15.3 GiB)."""


def gpu_mismatch(record: Mapping[str, Any], env: Environment) -> str | None:
    """How the GPU an engine record was built for differs from ``env``'s, or None.

    Name and compute capability are not enough: every Orin module is ``Orin (nvgpu)``
    at sm 8.7, from the 4-SM Orin Nano to the 16-SM AGX Orin, and TensorRT loads a plan
    built on one on another (warning in its log at most), running tactics chosen for
    the other chip. So the SM count and total memory are compared too; a record
    without them (written before they were kept) cannot prove it fits this GPU.
    """
    built_gpu, built_cc = record.get("gpu"), str(record.get("compute_capability"))
    if built_gpu != env.gpu or built_cc != env.compute_capability:
        return (f"{built_gpu} (compute capability {built_cc}), but this machine has {env.gpu} "
                f"(compute capability {env.compute_capability})")
    sms, mem = record.get("sm_count"), record.get("gpu_memory_mib")
    if env.sm_count is not None and sms != env.sm_count:
        if sms is None:
            return (f"{built_gpu} with an unrecorded SM count (the record predates that check), and {env.gpu} "
                    f"modules differ in SMs (this one has {env.sm_count})")
        return f"{built_gpu} with {sms} SMs, but this machine's {env.gpu} has {env.sm_count}"
    if env.memory_mib is not None:
        if not isinstance(mem, (int, float)) or mem <= 0:
            return f"{built_gpu} with unrecorded memory (the record predates that check)"
        if abs(mem - env.memory_mib) > MEMORY_TOLERANCE * max(mem, env.memory_mib):
            return f"{built_gpu} with {mem} MiB, but this machine's {env.gpu} has {env.memory_mib} MiB"
    return None


def check_engine_compatible(record: Mapping[str, Any], env: Environment, code: str) -> None:
    """Refuse an engine built for another TensorRT or GPU, before TensorRT sees it.

    TensorRT itself rejects a plan from another version with a cryptic
    deserialisation error, and may *accept* one from another GPU of the same compute
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
    why = gpu_mismatch(record, env)
    if why is not None:
        raise AdnError(
            f"{name} was built for {why}; engines are specific to the GPU they were built on.",
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


def check_engine_source(record: Mapping[str, Any], files: Mapping[str, Any], what: str) -> None:
    """Refuse an engine that was not built from the graph its record now sits beside.

    The engine's sha256 proves the file is intact, not that it is the engine of
    ``what``: swapped records (or a graph re-exported since the build) would run
    another sub-network's computation under this code. The record names the graph it
    was built from (``source.key`` and ``source.sha256``); that must be the graph the
    manifest lists for ``what`` now.
    """
    src = record.get("source")
    src = src if isinstance(src, Mapping) else {}
    key = src.get("key")
    current = files.get(key) if isinstance(key, str) else None
    if isinstance(current, Mapping) and src.get("sha256") and current.get("sha256") == src.get("sha256"):
        return
    now = current.get("path") if isinstance(current, Mapping) else "no such graph"
    raise AdnError(f"{record.get('path')} is listed as the engine of {what}, but it was built from "
                   f"{src.get('path')!r}, not from the graph now listed for {what} ({now}): the records were "
                   "swapped or edited, or the graph was re-exported after the build.",
                   "Rebuild: `adn-edge build DIR` rebuilds exactly the stale engines.")
