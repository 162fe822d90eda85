"""What ``adn-edge build`` turns into engines: whole sub-networks, or segment forms.

A :class:`Unit` is one graph that becomes one engine. Building treats both kinds the
same way (pick the graph, compare with the recorded engine, build, record); only
where their records live in the manifest and the shape of their input differ, and a
Unit carries exactly that. Plain Python over the manifest, tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adn_edge.errors import AdnError
from adn_edge.modeldir.manifest import SEGMENT_KINDS, segment_corrections, segments_record
from adn_edge.modeldir.names import segment_key


@dataclass(frozen=True)
class Unit:
    """One graph that becomes one engine: a whole sub-network, or one form of one segment.

    ``adn-edge build`` treats both the same way (pick the graph, compare with the
    recorded engine, build, record); only where their records live in the manifest
    and the shape of their input differ, and a Unit carries exactly that.
    """

    key: str
    """``1010`` for a sub-network, ``seg2_skip`` for part 2's skip form: the engine is
    ``<arch>_<key>.<precision>.engine``."""
    what: str
    """How messages name it: ``sub-network 1010``, ``segment 2 (skip)``."""
    files: Mapping[str, Any]
    """The unit's graphs by manifest key (``onnx``, ``onnx_fp16``, ``onnx_int8``)."""
    engines: dict[str, Any]
    """The manifest's live dict of this unit's engine records, by precision."""
    input_spec: Mapping[str, Any]
    """``{"name", "shape"}`` of the graph's one input, for the optimisation profile."""
    segment: int | None = None


def subnet_units(manifest: dict[str, Any], codes: Sequence[str]) -> list[Unit]:
    """The units of whole sub-networks, in the order given."""
    units = []
    for code in codes:
        entry = manifest["subnets"].get(code)
        if entry is None:
            have = ", ".join(sorted(manifest["subnets"], reverse=True)) or "none"
            raise AdnError(f"Sub-network {code} is not in this model directory (it holds: {have}).",
                           f"Export it first with `adn-edge export ... --subnet {code}`.")
        units.append(Unit(code, f"sub-network {code}", entry.get("files") or {}, entry.setdefault("engines", {}),
                          manifest["input"]))
    return units


def segment_what(key: str) -> str:
    """How messages name a segment form: ``seg2_skip`` -> ``segment 2 (skip)``."""
    index, kind = key.removeprefix("seg").split("_", 1)
    return f"segment {index} ({kind})"


def segment_units(manifest: dict[str, Any]) -> list[Unit]:
    """The 2*S units of the segmented export (``adn-edge export --segments``): part k in
    its full and skip forms. Their engines chain into every sub-network at run time.

    Engine records live beside the graphs: ``segments.parts[k].engines[kind][precision]``.
    """
    seg = segments_record(manifest, " to build", " (or build the monolithic sub-networks: leave --segments out)")
    corrections = segment_corrections(seg)
    if corrections is not None:
        raise AdnError(
            "These segment graphs were exported with BatchNorm recalibration (data: "
            f"{corrections.get('data')!r}): each takes per-sub-network correction vectors as extra inputs "
            f"({corrections['file']['path']}), which the segmented TensorRT engines are not fed, so engines built "
            "from them would compute wrong results for every sub-network.",
            "Build the recalibrated monolithic engines instead (`adn-edge build DIR` without --segments, from "
            "`adn-edge export CHECKPOINT --recalibrate DATA`), or export the segments without --recalibrate into "
            "another directory and build those with --segments (ONNX Runtime runs these corrected segments).")
    units = []
    for part in seg["parts"]:
        k = int(part["index"])
        engines = part.setdefault("engines", {})
        for kind in SEGMENT_KINDS.values():
            files = {"onnx": part["files"][kind]}
            for key, group in (("onnx_fp16", "files_fp16"), ("onnx_int8", "files_int8")):
                twin = (part.get(group) or {}).get(kind)
                if twin is not None:
                    files[key] = twin
            key = segment_key(k, kind)
            units.append(Unit(key, segment_what(key), files, engines.setdefault(kind, {}),
                              {"name": part["input"], "shape": part["input_shape"]}, segment=k))
    return units
