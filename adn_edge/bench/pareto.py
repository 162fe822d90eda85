"""Plots of the Pareto-optimal sub-networks (the rule itself: :mod:`adn_edge.modeldir.pareto`).

The point of an Adaptive Depth Network is choosing, at run time, the most accurate
sub-network that fits a latency or energy budget; only Pareto-optimal ones are
ever worth choosing. When accuracy is unknown (no evaluation results yet), GMACs
stand in for it: in an ADN a sub-network with more blocks is the more accurate
one, so "more GMACs for less latency" is the same trade-off, and minimising both
would only ever pick the base-net.

What a plot shows, so that it can be read without the code:

* x: the latency statistic the tables and the runtime's policies use (p99 by default,
  :data:`adn_edge.modeldir.pareto.LATENCY_STAT`), in ms; energy per inference in mJ in a
  second panel when it was measured. y: top-1 accuracy in % on the evaluation's data
  set (or GMACs, said so, when there is no evaluation).
* The title names the model, the precision that ran, the device and the backend.
* Only Pareto-optimal points are labelled with their codes (dominated ones too when
  there is room), each label placed where it overlaps no other label or point and
  stays inside the axes.
* One slow outlier (a p99 spike 100x the rest) must not squash the others into one
  blob: points beyond a robust limit are drawn at the right edge as arrows, labelled
  with their true value, and the figures the policies use are unchanged.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch,
works headless) and are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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


def outlier_limit(values: list[float]) -> float | None:
    """The x above which points are outliers that would squash the others (None: none are).

    An outlier lies beyond both Q3 + 3 IQR and twice the median: a spread that is part
    of the data (a super-net 2x slower than the base-net) is never cut, a spike is."""
    if len(values) < 4:
        return None
    x = np.asarray(values, dtype=np.float64)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    fence = max(q3 + 3.0 * (q3 - q1), 2.0 * med)
    return float(fence) if np.any(x > fence) else None


def _title(report: Mapping[str, Any]) -> str:
    dev = report.get("device") or {}
    model = report.get("model") or {}
    arch = model.get("arch") or "model"
    precision = report.get("precision") or model.get("precision") or "fp32"
    device = dev.get("name") or dev.get("kind") or "?"
    kind = dev.get("kind")
    where = f"{device} ({kind})" if kind and kind != device else device
    mode = f"{report.get('backend', '?')}{', segmented' if report.get('segmented') else ''}"
    threads = (report.get("settings") or {}).get("threads")
    return (f"{arch}, {precision}, on {where}: {mode}, batch {report.get('batch', '?')}"
            + (f", {threads} thread{'s' if threads != 1 else ''}" if threads else ""))


def _ylabel(by: str, quality: Mapping[str, float], dataset: str | None) -> tuple[str, float]:
    """(label, factor applied to the values): accuracies given as fractions are shown in %."""
    if by != "accuracy":
        return "GMACs (stand-in for accuracy: no evaluation yet)", 1.0
    factor = 100.0 if quality and max(quality.values()) <= 1.0 else 1.0
    return f"top-1 accuracy (%){f' on {dataset}' if dataset else ''}", factor


def _dataset(report: Mapping[str, Any]) -> str | None:
    src = report.get("accuracy_source") or {}
    name = src.get("dataset")
    if not name:
        return None
    return f"{name} ({src['split']})" if src.get("split") else str(name)


def _overlaps(box: Any, others: list[Any]) -> bool:
    return any(box.overlaps(o) for o in others)


_OFFSETS = [(6, 5, "left", "bottom"), (-6, 5, "right", "bottom"), (6, -6, "left", "top"), (-6, -6, "right", "top"),
            (0, 9, "center", "bottom"), (0, -10, "center", "top"), (10, 0, "left", "center"),
            (-10, 0, "right", "center")]


def _place(ax: Any, renderer: Any, x: float, y: float, text: str, taken: list[Any], *, must: bool,
           lead: bool = False, **style: Any) -> Any:
    """Annotate (x, y) with ``text`` at the first offset whose box stays inside the axes
    and overlaps nothing in ``taken``; farther offsets (all of them with ``lead``) get a
    leader line. A label that ``must`` be shown and fits nowhere goes where it stays
    inside and overlaps the fewest boxes; others are dropped."""
    frame = ax.get_window_extent(renderer)
    tries: list[tuple[float, float, str, str, float]] = \
        [] if lead else [(float(dx), float(dy), ha, va, 1.0) for dx, dy, ha, va in _OFFSETS]
    tries += [(dx * k, dy * k, ha, va, k) for k in (2.5, 4.0) for dx, dy, ha, va in _OFFSETS]
    best: tuple[tuple[int, int], tuple[float, float, str, str, float]] | None = None
    for attempt in tries:
        ann = _annotate(ax, x, y, text, attempt, style)
        box = _text_box(ann, renderer).expanded(1.08, 1.35)
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        hits = sum(1 for o in taken if box.overlaps(o))
        if inside and not hits:
            taken.append(box)
            return ann
        ann.remove()
        score = (0 if inside else 1, hits)
        if best is None or score < best[0]:
            best = (score, attempt)
    if not must or best is None:
        return None
    ann = _annotate(ax, x, y, text, best[1], style)
    taken.append(_text_box(ann, renderer))
    return ann


def _text_box(ann: Any, renderer: Any) -> Any:
    """The display box of an annotation's text, without its leader line (which ends at
    its own point, an obstacle like every point)."""
    from matplotlib.text import Text

    ann.get_window_extent(renderer)  # places the text for this renderer
    return Text.get_window_extent(ann, renderer)


def _annotate(ax: Any, x: float, y: float, text: str, attempt: tuple[float, float, str, str, float],
              style: dict[str, Any]) -> Any:
    dx, dy, ha, va, k = attempt
    arrow = {"arrowstyle": "-", "color": style.get("color", "0.3"), "lw": 0.6, "shrinkA": 0, "shrinkB": 4} \
        if k > 1 else None
    ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va, arrowprops=arrow,
                      annotation_clip=False, **style)
    ann.set_in_layout(False)
    return ann


def plot(report: Mapping[str, Any], path: str | os.PathLike[str], *, accuracy: Mapping[str, float] | None = None,
         gmacs: Mapping[str, float] | None = None, title: str | None = None, dpi: int = 120,
         stat: str = LATENCY_STAT, dataset: str | None = None) -> Path:
    """Latency (and energy, when measured) against accuracy, or GMACs when accuracy is unknown.

    Pareto-optimal sub-networks (:func:`adn_edge.modeldir.pareto.pareto_front`, on the
    ``stat`` latency, p99 by default like the runtime's policies) are highlighted,
    joined and labelled with their codes.
    ``accuracy``/``gmacs`` map codes to values and fall back to the entries' own
    ``accuracy``/``gmacs`` keys (the bench copies in only accuracies of the precision
    that ran: an INT8 report never carries FP32 accuracies). ``dataset`` names the
    evaluation data for the y label (default: the report's ``accuracy_source``). The
    format follows the suffix (png, svg or pdf).
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in _FORMATS:
        raise AdnError(f"Cannot write a plot to {str(path)!r}: unknown image format {fmt!r}.",
                       f"Use a file name ending in {', '.join('.' + f for f in _FORMATS)}.")
    fig = figure(report, accuracy=accuracy, gmacs=gmacs, title=title, dpi=dpi, stat=stat, dataset=dataset)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path


def figure(report: Mapping[str, Any], *, accuracy: Mapping[str, float] | None = None,
           gmacs: Mapping[str, float] | None = None, title: str | None = None, dpi: int = 120,
           stat: str = LATENCY_STAT, dataset: str | None = None) -> Any:
    """The matplotlib Figure :func:`plot` writes (arguments as there), laid out and labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    quality, by = _quality(report, accuracy, gmacs)
    ylabel, factor = _ylabel(by, quality, dataset or (_dataset(report) if accuracy is None else None))
    shown = {c: v * factor for c, v in quality.items()}
    subs = report["subnets"]
    lat = {c: latency(e, stat) for c, e in subs.items()}
    panels = [(f"{stat} latency (ms)", {c: v for c, v in lat.items() if v is not None}, "ms")]
    energy = {c: e.get("energy_mj") for c, e in subs.items() if e.get("energy_mj") is not None}
    if energy:
        panels.append(("energy per inference (mJ)", energy, "mJ"))

    fig = Figure(figsize=(6.4 * len(panels), 4.8), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    drawn = []
    for ax, (xlabel, xs, unit) in zip(axes, panels):
        codes = [c for c in xs if c in shown]
        best = set(pareto_front({c: xs[c] for c in codes}, quality))  # on the true values, as the policies
        rest = [c for c in codes if c not in best]
        front = sorted(best, key=lambda c: xs[c])
        limit = outlier_limit([xs[c] for c in codes])
        inliers = [c for c in codes if limit is None or xs[c] <= limit]
        outliers = [c for c in codes if c not in inliers]
        handles = []
        if outliers:  # the axis ends after the inliers; outliers sit at its edge, with their value
            lo, hi = min(xs[c] for c in inliers), max(xs[c] for c in inliers)
            span = (hi - lo) or max(hi, 1e-9) * 0.2
            right = hi + 0.18 * span
            ax.set_xlim(max(0.0, lo - 0.08 * span), right)
            edge = right - 0.04 * span
        else:
            edge = None

        def px(c: str, edge: float | None = edge, outliers: list[str] = outliers) -> float:
            return edge if edge is not None and c in outliers else xs[c]

        plain = [c for c in rest if c not in outliers]
        if plain:
            ax.scatter([xs[c] for c in plain], [shown[c] for c in plain], s=24, color="0.6", zorder=2)
            handles.append(Line2D([], [], ls="", marker="o", color="0.6", label="dominated"))
        ax.plot([px(c) for c in front], [shown[c] for c in front], "-", color="tab:red", lw=1.4, zorder=3,
                drawstyle="steps-post")
        front_in = [c for c in front if c not in outliers]
        ax.scatter([xs[c] for c in front_in], [shown[c] for c in front_in], s=44, color="tab:red", zorder=4)
        handles.append(Line2D([], [], marker="o", color="tab:red",
                              label=f"Pareto-optimal ({stat if unit == 'ms' else 'energy'} vs "
                                    f"{'accuracy' if by == 'accuracy' else 'GMACs'})"))
        if outliers:
            ax.scatter([edge] * len(outliers), [shown[c] for c in outliers], marker=">", s=60, zorder=4,
                       color=["tab:red" if c in best else "0.45" for c in outliers])
            handles.append(Line2D([], [], ls="", marker=">", color="0.45",
                                  label=f"beyond the axis (> {limit:.3g} {unit}; value in the label)"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.08, y=0.12)
        ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
        drawn.append((ax, xs, front, rest, outliers, px, unit))

    fig.suptitle(title or _title(report), fontsize=10)
    fig.draw_without_rendering()  # final layout and limits before label boxes are measured
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    for ax, xs, front, rest, outliers, px, unit in drawn:
        taken = [ax.get_legend().get_window_extent(renderer)]
        for c in [*front, *rest]:  # every marker is an obstacle for every label
            cx, cy = ax.transData.transform((px(c), shown[c]))
            taken.append(_box(cx, cy, 4.5 * fig.dpi / 72))
        for c in front:
            text = c if c not in outliers else f"{c} ({xs[c]:.3g} {unit})"
            _place(ax, renderer, px(c), shown[c], text, taken, must=True, lead=c in outliers, fontsize=8,
                   color="tab:red", fontweight="bold")
        for c in sorted(rest, key=lambda c: c not in outliers):
            text = c if c not in outliers else f"{c} ({xs[c]:.3g} {unit})"
            _place(ax, renderer, px(c), shown[c], text, taken, must=c in outliers, lead=c in outliers, fontsize=6.5,
                   color="0.4")
    return fig


def _box(cx: float, cy: float, r: float) -> Any:
    from matplotlib.transforms import Bbox

    return Bbox([[cx - r, cy - r], [cx + r, cy + r]])
