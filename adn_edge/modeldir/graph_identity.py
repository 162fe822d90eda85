"""Is this graph the one its manifest record says it is? Checked before it is made ready.

The sha256 in a manifest record proves a file is unchanged, not that it sits under
the right record: swap the records of ``1111`` and ``0000`` (hashes still valid) and
``eval`` reported each one's accuracy under the other's code; swap a segment's full
and skip forms and the segmented ``1111`` computed ``1101``. Every graph adn-edge
writes carries its identity in ``metadata_props`` (``adn.arch``, ``adn.subnet`` or
``adn.segment`` + ``adn.kind``, ``adn.source_sha256``; INT8 and FP16 twins keep
them), and backends compare it with the record they loaded the graph for
(:func:`check_metadata`) before the sub-network can run.

What this does not stop: someone who can rewrite both a graph and the manifest can
run their own graph (docs/model-directory.md, "Trust model").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adn_edge.errors import AdnError


def _source(manifest: Mapping[str, Any]) -> str:
    source = manifest.get("source")
    return str(source.get("sha256") or "") if isinstance(source, Mapping) else ""


def for_subnet(manifest: Mapping[str, Any], code: str) -> dict[str, str]:
    """The metadata a whole sub-network's graph must carry."""
    return {"adn.arch": str(manifest.get("arch")), "adn.subnet": code, "adn.source_sha256": _source(manifest)}


def for_segment(manifest: Mapping[str, Any], index: int, kind: str) -> dict[str, str]:
    """The metadata one form (``full``/``skip``) of segment ``index`` must carry."""
    return {"adn.arch": str(manifest.get("arch")), "adn.segment": str(index), "adn.kind": kind,
            "adn.source_sha256": _source(manifest)}


def check_metadata(metadata: Mapping[str, str], expected: Mapping[str, str], what: str, path: str) -> None:
    """Refuse a graph whose ``metadata_props`` contradict (or lack) what its record says."""
    wrong = {k: metadata.get(k) for k, v in expected.items() if metadata.get(k) != v}
    if not wrong:
        return
    says = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
    want = ", ".join(f"{k}={expected[k]!r}" for k in wrong)
    raise AdnError(f"{path} is listed in manifest.json as {what}, but the graph says {says} (expected {want}): "
                   "the manifest's records were swapped or edited, or the file comes from another export.",
                   "Re-export the model directory; adn-edge never runs a graph under another sub-network's code.")
