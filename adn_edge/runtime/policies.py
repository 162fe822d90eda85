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
instead): a robot must still get an answer. Under a latency budget that is the
fastest measured sub-network, usually the base-net. :meth:`Policy.decide` returns
the same choice as a :class:`Decision` whose ``fits`` says whether it fits.
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


@dataclass(frozen=True)
class Decision:
    """A choice and whether it honours the budgets (:meth:`Policy.decide`).

    ``fits`` is False when no candidate fitted and ``code`` is the fallback: the
    candidate that misses its budgets by the smallest factor (``miss``, its worst
    measured/budget ratio, above 1). ``measured`` holds the chosen candidate's figures
    for the budgeted resources (``latency``, in ms, and ``energy``, in mJ)."""

    code: str
    fits: bool
    budgets: dict[str, float] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def miss(self) -> float | None:
        """The worst measured/budget ratio of ``code`` (above 1 when it does not fit);
        None without budgets."""
        ratios = [self.measured[r] / v for r, v in self.budgets.items() if r in self.measured]
        return max(ratios) if ratios else None

    def __str__(self) -> str:
        return self.code


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

    def decide(self, latency_ms: float | None = None, energy_mj: float | None = None, *,
               pareto_only: bool = True) -> Decision:
        """The most accurate sub-network whose latency (and energy per inference) fit,
        and whether one did.

        Without any budget, the most accurate of all (``fits`` True). When nothing fits,
        ``code`` is the candidate that misses by the smallest factor (under a latency
        budget, the fastest measured one: usually the base-net) and ``fits`` is False.
        Raises :class:`AdnError` for a budget that is not positive, and when nothing
        is measured for a budgeted resource or no candidate can be ranked.
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
            return Decision(max(quality, key=lambda c: (quality[c], c)), True)
        by = tuple(budgets)
        self._require(by)
        codes = self.pareto(by) if pareto_only else [c for c in self.pareto_candidates(by)]

        def value(c: str, r: str) -> float:
            cand = self.candidates[c]
            return float(cand.latency_ms if r == "latency" else cand.energy_mj)  # type: ignore[arg-type]

        def decision(code: str, fits: bool) -> Decision:
            return Decision(code, fits, budgets, {r: value(code, r) for r in by})

        fits = [c for c in codes if all(value(c, r) <= budgets[r] for r in by)]
        if fits:
            return decision(max(fits, key=lambda c: (quality[c], -value(c, by[0]), c)), True)
        miss = {c: max(value(c, r) / budgets[r] for r in by) for c in codes}
        return decision(min(miss, key=lambda c: (miss[c], -quality[c], c)), False)

    def most_accurate_within(self, latency_ms: float | None = None, energy_mj: float | None = None, *,
                             pareto_only: bool = True, strict: bool = False) -> str:
        """The most accurate sub-network whose latency (and energy per inference) fit.

        Without any budget, the most accurate of all. When nothing fits, this still
        returns a code: the candidate that misses by the smallest factor (under a
        latency budget, the fastest measured one, usually the base-net). To know
        whether the answer fits, use :meth:`decide` (its ``fits``); ``strict=True``
        raises an :class:`AdnError` naming the closest candidate instead.
        """
        d = self.decide(latency_ms, energy_mj, pareto_only=pareto_only)
        if strict and not d.fits:
            want = " and ".join(f"{k} <= {v:g} {'ms' if k == 'latency' else 'mJ'}" for k, v in d.budgets.items())
            raise AdnError(f"No sub-network fits {want}; the closest is {d.code} "
                           f"({', '.join(f'{r} {v:.3g}' for r, v in d.measured.items())}).",
                           "Relax the budget, or measure again on this device with `adn-edge bench`.")
        return d.code

    def pareto_candidates(self, by: Sequence[str]) -> list[str]:
        quality = self.quality()
        return [c.code for c in self.candidates.values() if c.code in quality
                and all((c.latency_ms if r == "latency" else c.energy_mj) is not None for r in by)]

    def fastest_within(self, latency_ms: float, **kwargs: Any) -> str:
        """The contract's name (docs/runtime.md): the sub-network to run so that inference fits
        ``latency_ms``; of those that fit, the most accurate (see most_accurate_within).

        When nothing fits, it returns the fastest measured sub-network (the one missing
        ``latency_ms`` by the least, usually the base-net), not an error: a control
        loop must still get an answer. ``decide(latency_ms).fits`` tells whether the
        answer fits; ``strict=True`` raises an :class:`AdnError` instead.
        """
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
