"""What a re-export with other weights leaves behind, removed or set aside.

Exporting other weights (or the same weights with other options) into a directory
writes a fresh manifest. Before this, the old graphs and engines stayed on disk
unlisted, and the old ``eval.json`` / ``bench-*.json`` stayed where policies read
them, so ``most_accurate_within`` ranked the new weights by the old model's
accuracy. After the new export is written (under the directory's writer lock):

* files the old manifest listed and the new one does not (graphs, engines) are
  deleted, as are caches derived from them (INT8 calibration and range caches);
* result files (``eval*.json``, ``bench-*.json``) move to ``.retired/<UTC time>/``:
  measurements are worth keeping for a comparison, never worth reading as current.

Readers also check every result's identity against the manifest
(:mod:`adn_edge.modeldir.results`), so results copied in by hand are ignored too.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from adn_edge.errors import AdnError
from adn_edge.modeldir.manifest import SEGMENT_FILE_KEYS, resolve_in
from adn_edge.modeldir.names import BENCH_GLOB, EVAL_GLOB, RANGES_SUFFIX, RETIRED


def _records(m: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for entry in (m.get("subnets") or {}).values():
        if isinstance(entry, Mapping):
            for group in ("files", "engines"):
                yield from (r for r in (entry.get(group) or {}).values() if isinstance(r, Mapping))
    segments = m.get("segments")
    corrections = segments.get("corrections") if isinstance(segments, Mapping) else None
    if isinstance(corrections, Mapping) and isinstance(corrections.get("file"), Mapping):
        yield corrections["file"]
    for part in (segments.get("parts") or []) if isinstance(segments, Mapping) else []:
        if not isinstance(part, Mapping):
            continue
        for group in SEGMENT_FILE_KEYS.values():
            yield from (r for r in (part.get(group) or {}).values() if isinstance(r, Mapping))
        for by_precision in (part.get("engines") or {}).values():
            if isinstance(by_precision, Mapping):
                yield from (r for r in by_precision.values() if isinstance(r, Mapping))


def listed_files(m: Mapping[str, Any]) -> set[str]:
    """Every file path a manifest lists (graphs, engines, segment graphs and engines)."""
    return {str(r["path"]) for r in _records(m) if isinstance(r.get("path"), str)}


def _inside(directory: Path, rel: str) -> Path | None:
    """``rel`` as a plain file inside ``directory`` (:func:`~adn_edge.modeldir.manifest.resolve_in`,
    the one path rule), or None: never touch anything outside, nor follow a link out."""
    try:
        path = resolve_in(directory, rel)
    except AdnError:
        return None
    return path if path.is_file() and not (directory / rel).is_symlink() else None


def retire(directory: str | os.PathLike[str], old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Remove what ``old`` listed and ``new`` does not, set old results aside; returns what moved or went."""
    directory = Path(directory)
    done: list[str] = []
    for rel in sorted(listed_files(old) - listed_files(new)):
        path = _inside(directory, rel)
        if path is not None:
            path.unlink()
            done.append(rel)
    arch = str(old.get("arch", ""))
    derived = [p for pattern in (f"{arch}_*.int8.calib", f"{arch}_*.{RANGES_SUFFIX}") if arch
               for p in directory.glob(pattern)]
    for path in derived:
        if _inside(directory, path.name) is not None:
            path.unlink()
            done.append(path.name)
    results = [p for pattern in (EVAL_GLOB, BENCH_GLOB) for p in sorted(directory.glob(pattern))
               if _inside(directory, p.name) is not None]
    if results:
        folder = set_aside(directory, results)
        done += [f"{path.name} -> {folder}/" for path in results]
    return done


def set_aside(directory: Path, paths: list[Path]) -> str:
    """Move ``paths`` (files of ``directory``) into a new ``.retired/<UTC time>/``, where no
    reader looks; returns that folder relative to the directory."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = directory / RETIRED / stamp
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        os.replace(path, target / path.name)
    return f"{RETIRED}/{stamp}"
