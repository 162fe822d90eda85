"""Choosing a sub-network from measured results: the point of an adaptive network.

Inputs, all read from the model directory (the runtime never needs the training
code to decide):

* ``bench-<device>.json`` (docs/model-directory.md, written by ``adn-edge bench``):
  latency per sub-network (``latency_ms.{mean,p50,p90,p99,...}``) and, when a power
  meter was used, ``energy_mj`` (``null`` otherwise). ``bench-<device>-segmented.json``
  (``adn-edge bench --segmented``) is a segmented run's; :func:`find_bench` gives
  segmented switchers those and monolithic switchers the others.
* ``eval*.json``, accuracy per sub-network, in this shape (schema 1)::

      {"schema": 1, "dataset": "imagenet-val",
       "subnets": {"1111": {"top1": 0.771, "top5": 0.934, "samples": 50000},
                   "0000": {"top1": 0.723, "top5": 0.905, "samples": 50000}}}

  Codes may be written in any accepted spelling (normalised here). ``top1`` is the
  default metric; the unit (fraction or percent) does not matter, only the order.
  When several files match, ``eval.json`` wins, else the newest.
* The manifest's GMACs, the stand-in for accuracy when no evaluation exists: in an
  ADN a sub-network that runs more blocks is the more accurate one, so ordering by
  GMACs gives the same choices until real accuracies arrive.

Only Pareto-optimal sub-networks are candidates by default: one that is slower (or
hungrier) and no more accurate than another is never the right answer.

Budgets read the ``p99`` latency by default
(:data:`adn_edge.modeldir.pareto.LATENCY_STAT`, the statistic plots use too), because
a control loop's deadline is about the slow inferences, not the typical one
(``stat=`` picks another key; every report read has all of them, reports are
checked against the schema on read). When no candidate fits, the policy
returns the one that misses the budget by the least (``strict=True`` raises
instead): a robot must still get an answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adn_edge import subnet
from adn_edge.modeldir.results import current_codes, find_bench, find_eval, is_segmented, load_accuracy, load_bench
from adn_edge.errors import AdnError
from adn_edge.modeldir.pareto import LATENCY_STAT, LATENCY_STATS, latency, pareto_front



@dataclass(frozen=True)
class Candidate:
    code: str
    latency_ms: float | None = None
    energy_mj: float | None = None
    accuracy: float | None = None
    gmacs: float | None = None


@dataclass
class Policy:
    """Candidates with whatever is known about them, and the rules to choose one."""

    candidates: dict[str, Candidate]
    sources: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None,
                       codes: Sequence[str] | None = None, *, device: str | None = None, backend: str | None = None,
                       segmented: bool | None = None, precision: str | None = None, stat: str = LATENCY_STAT,
                       energy_key: str = "energy_mj", metric: str = "top1") -> Policy:
        """Read the manifest, the bench report (:func:`find_bench`: ``device``, ``backend``,
        ``segmented`` and ``precision`` pick it) and the evaluation; ``stat`` is the
        latency statistic budgets are held to."""
        from adn_edge.modeldir import manifest as manifest_mod

        directory = Path(directory)
        m = manifest if manifest is not None else manifest_mod.load(directory)
        if stat not in LATENCY_STATS:
            raise AdnError(f"stat must be one of {', '.join(LATENCY_STATS)}, not {stat!r}.")
        num_stages = int(m["num_stages"])
        gmacs = {c: e.get("gmacs") for c, e in m["subnets"].items()}
        for c, e in (m.get("segments") or {}).get("subnets", {}).items():
            gmacs.setdefault(c, e.get("gmacs"))
        codes = list(codes) if codes is not None else list(gmacs)
        segmented = is_segmented(backend, segmented)
        notes: list[str] = []
        bench_path = find_bench(directory, device, backend, segmented, precision)
        report = load_bench(bench_path) if bench_path else {}
        bench = {subnet.parse_code(c, num_stages): e for c, e in report.get("subnets", {}).items()}
        if bench_path:  # only what still is in the directory: not another model's latencies
            keep = current_codes(report, m, bench, bench_path.name, notes)
            bench = {c: e for c, e in bench.items() if c in keep}
        eval_path = find_eval(directory, precision, segmented)
        accuracy = (load_accuracy(directory, m, metric, path=eval_path, notes=notes) or {}) if eval_path else {}
        if not accuracy:  # a bench report may carry accuracies as extra keys
            accuracy = {c: float(e["accuracy"]) for c, e in bench.items() if e.get("accuracy") is not None}
        if segmented and bench_path and report.get("segmented") is not True:
            notes.append(f"latencies from {bench_path.name}, measured on the monolithic graphs: segmented runs add "
                         "a graph boundary per stage (`adn-edge bench --segmented` measures them)")
        measured = report.get("precision")
        if precision and measured and measured != precision:
            notes.append(f"latencies from {bench_path.name}, measured at {measured}; this switcher runs {precision} "
                         f"(`adn-edge bench ... --precision {precision}` measures it)")
        if accuracy and any(c not in accuracy for c in codes):
            missing = [c for c in codes if c not in accuracy]
            notes.append(f"no accuracy for {', '.join(missing)}: they are never chosen")
        cands = {}
        for c in codes:
            e = bench.get(c, {})
            energy = e.get(energy_key)
            cands[c] = Candidate(c, latency(e, stat) if e else None, None if energy is None else float(energy),
                                 accuracy.get(c), None if gmacs.get(c) is None else float(gmacs[c]))
        sources = {"bench": str(bench_path) if bench_path else None, "eval": str(eval_path) if eval_path else None,
                   "bench_mode": None if not bench_path else "segmented" if report.get("segmented") is True
                   else "monolithic",
                   "quality": "accuracy" if accuracy else "gmacs", "stat": stat, "energy_key": energy_key}
        return cls(cands, sources, notes)

    @property
    def quality_by(self) -> str:
        return self.sources.get("quality") or ("accuracy" if any(c.accuracy is not None
                                                                   for c in self.candidates.values()) else "gmacs")

    def quality(self) -> dict[str, float]:
        key = self.quality_by
        out = {}
        for c in self.candidates.values():
            value = c.accuracy if key == "accuracy" else c.gmacs
            if value is not None:
                out[c.code] = value
        return out

    def pareto(self, by: Sequence[str] = ("latency",)) -> list[str]:
        """Pareto-optimal codes over the resources ``by`` (latency and/or energy) and quality,
        cheapest first. Codes lacking a measurement of one of ``by`` are left out."""
        points: dict[str, list[float]] = {}
        for c in self.candidates.values():
            costs = [c.latency_ms if r == "latency" else c.energy_mj for r in by]
            if all(v is not None for v in costs):
                points[c.code] = [float(v) for v in costs]  # type: ignore[arg-type]
        return pareto_front(points, self.quality())

    def ladder(self) -> list[str]:
        """Sub-networks to step through, shallowest (fastest) first: the latency Pareto
        set when latencies are known, else every candidate in quality order."""
        if any(c.latency_ms is not None for c in self.candidates.values()):
            front = self.pareto(("latency",))
            if front:
                return front
        q = self.quality()
        return sorted(q, key=lambda c: (q[c], c))

    def most_accurate_within(self, latency_ms: float | None = None, energy_mj: float | None = None, *,
                             pareto_only: bool = True, strict: bool = False) -> str:
        """The most accurate sub-network whose latency (and energy per inference) fit.

        Without any budget, the most accurate of all. When nothing fits: the
        candidate that misses by the smallest factor, or an AdnError with ``strict``.
        """
        budgets = {k: float(v) for k, v in (("latency", latency_ms), ("energy", energy_mj)) if v is not None}
        for k, v in budgets.items():
            if not v > 0:
                raise AdnError(f"The {k} budget must be positive, not {v!r}.")
        quality = self.quality()
        if not quality:
            raise AdnError("No candidate sub-network has an accuracy or GMACs figure to rank it by.",
                           "Run `adn-edge eval`, or re-export the directory so the manifest has GMACs.")
        if not budgets:
            return max(quality, key=lambda c: (quality[c], c))
        by = tuple(budgets)
        self._require(by)
        codes = self.pareto(by) if pareto_only else [c for c in self.pareto_candidates(by)]

        def value(c: str, r: str) -> float:
            cand = self.candidates[c]
            return float(cand.latency_ms if r == "latency" else cand.energy_mj)  # type: ignore[arg-type]

        fits = [c for c in codes if all(value(c, r) <= budgets[r] for r in by)]
        if fits:
            return max(fits, key=lambda c: (quality[c], -value(c, by[0]), c))
        miss = {c: max(value(c, r) / budgets[r] for r in by) for c in codes}
        best = min(miss, key=lambda c: (miss[c], -quality[c], c))
        if strict:
            want = " and ".join(f"{k} <= {v:g} {'ms' if k == 'latency' else 'mJ'}" for k, v in budgets.items())
            raise AdnError(f"No sub-network fits {want}; the closest is {best} "
                           f"({', '.join(f'{r} {value(best, r):.3g}' for r in by)}).",
                           "Relax the budget, or measure again on this device with `adn-edge bench`.")
        return best

    def pareto_candidates(self, by: Sequence[str]) -> list[str]:
        quality = self.quality()
        return [c.code for c in self.candidates.values() if c.code in quality
                and all((c.latency_ms if r == "latency" else c.energy_mj) is not None for r in by)]

    def fastest_within(self, latency_ms: float, **kwargs: Any) -> str:
        """The contract's name (docs/runtime.md): the sub-network to run so that inference fits
        ``latency_ms``; of those that fit, the most accurate (see most_accurate_within)."""
        return self.most_accurate_within(latency_ms=latency_ms, **kwargs)

    def _require(self, by: Sequence[str]) -> None:
        if "latency" in by and not any(c.latency_ms is not None for c in self.candidates.values()):
            raise AdnError("No latency measurements for these sub-networks: a latency budget cannot be honoured.",
                           "Measure them first: `adn-edge bench DIR --device cpu|cuda|orin`.")
        if "energy" in by and not any(c.energy_mj is not None for c in self.candidates.values()):
            where = self.sources.get("bench") or "no benchmark report"
            raise AdnError(f"No energy measurements ({where}): an energy budget cannot be honoured.",
                           "Benchmark with a power source: `adn-edge bench DIR --device orin --power auto`.")

    def describe(self) -> dict[str, Any]:
        return {"sources": dict(self.sources), "notes": list(self.notes),
                "pareto_latency": self.pareto(("latency",)) if any(
                    c.latency_ms is not None for c in self.candidates.values()) else [],
                "candidates": {c.code: {"latency_ms": c.latency_ms, "energy_mj": c.energy_mj,
                                        "accuracy": c.accuracy, "gmacs": c.gmacs} for c in self.candidates.values()}}
