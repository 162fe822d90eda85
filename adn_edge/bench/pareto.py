"""Plots of the Pareto-optimal sub-networks (the rule itself: :mod:`adn_edge.modeldir.pareto`).

The point of an Adaptive Depth Network is choosing, at run time, the most accurate
sub-network that fits a latency or energy budget; only Pareto-optimal ones are
ever worth choosing. When accuracy is unknown (no evaluation results yet), GMACs
stand in for it: in an ADN a sub-network with more blocks is the more accurate
one, so "more GMACs for less latency" is the same trade-off, and minimising both
would only ever pick the base-net.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch,
works headless) and are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adn_edge.errors import AdnError
from adn_edge.fileio import atomic_path
from adn_edge.modeldir.pareto import LATENCY_STAT, latency, pareto_front

_FORMATS = ("png", "svg", "pdf")


def _quality(report: Mapping[str, Any], accuracy: Mapping[str, float] | None,
             gmacs: Mapping[str, float] | None) -> tuple[dict[str, float], str]:
    subs = report["subnets"]

    def pick(mapping: Mapping[str, float] | None, *keys: str) -> dict[str, float]:
        out = {}
        for code, e in subs.items():
            v = mapping.get(code) if mapping is not None else None
            for k in keys:
                if v is None:
                    v = e.get(k)
            if v is not None:
                out[code] = float(v)
        return out

    acc = pick(accuracy, "accuracy", "top1")
    if acc:
        return acc, "accuracy"
    macs = pick(gmacs, "gmacs", "gflops")
    if macs:
        return macs, "gmacs"
    raise AdnError("A Pareto plot needs the sub-networks' accuracy (from evaluation) or their GMACs.",
                   "Pass the manifest's GMACs, or run `adn-edge eval` first to get accuracies.")


def plot(report: Mapping[str, Any], path: str | os.PathLike[str], *, accuracy: Mapping[str, float] | None = None,
         gmacs: Mapping[str, float] | None = None, title: str | None = None, dpi: int = 120,
         stat: str = LATENCY_STAT) -> Path:
    """Latency (and energy, when measured) against accuracy, or GMACs when accuracy is unknown.

    Pareto-optimal sub-networks (:func:`adn_edge.modeldir.pareto.pareto_front`, on the
    ``stat`` latency, p99 by default like the runtime's policies) are highlighted,
    joined and labelled with their codes.
    ``accuracy``/``gmacs`` map codes to values and fall back to the entries' own
    ``accuracy``/``gmacs`` keys. The format follows the suffix (png, svg or pdf).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in _FORMATS:
        raise AdnError(f"Cannot write a plot to {str(path)!r}: unknown image format {fmt!r}.",
                       f"Use a file name ending in {', '.join('.' + f for f in _FORMATS)}.")
    quality, by = _quality(report, accuracy, gmacs)
    subs = report["subnets"]
    lat = {c: latency(e, stat) for c, e in subs.items()}
    panels = [(f"{stat} latency (ms)", {c: v for c, v in lat.items() if v is not None})]
    energy = {c: e.get("energy_mj") for c, e in subs.items() if e.get("energy_mj") is not None}
    if energy:
        panels.append(("energy per inference (mJ)", energy))
    ylabel = "accuracy" if by == "accuracy" else "GMACs (proxy for accuracy)"

    fig = Figure(figsize=(6.0 * len(panels), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (xlabel, xs) in zip(axes, panels):
        codes = [c for c in xs if c in quality]
        best = set(pareto_front({c: xs[c] for c in codes}, quality))
        rest = [c for c in codes if c not in best]
        ax.scatter([xs[c] for c in rest], [quality[c] for c in rest], s=22, color="0.6", label="dominated", zorder=2)
        front = sorted(best, key=lambda c: xs[c])
        ax.plot([xs[c] for c in front], [quality[c] for c in front], "-o", color="tab:red", ms=6,
                label="Pareto-optimal", zorder=3, drawstyle="steps-post")
        ax.scatter([xs[c] for c in front], [quality[c] for c in front], s=36, color="tab:red", zorder=4)
        for k, c in enumerate(front):  # alternate sides so neighbouring labels do not collide
            ax.annotate(c, (xs[c], quality[c]), textcoords="offset points", xytext=(5, 4) if k % 2 else (-5, 5),
                        ha="left" if k % 2 else "right", fontsize=8, color="tab:red", fontweight="bold")
        if len(rest) <= 32:
            for c in rest:
                ax.annotate(c, (xs[c], quality[c]), textcoords="offset points", xytext=(3, -9), fontsize=6,
                            color="0.5")
        ax.set_xlabel(xlabel + ("; Pareto by this statistic, as the runtime's policies rank" if ax is axes[0] else ""))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    dev = report.get("device", {})
    fig.suptitle(title or f"{dev.get('name') or dev.get('kind', '')} - {report.get('backend', '')}, "
                          f"batch {report.get('batch', '')}", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path
