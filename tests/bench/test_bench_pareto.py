"""Pareto sets and the plot files."""

from __future__ import annotations

import pytest
from adn_edge.bench.pareto import plot
from adn_edge.errors import AdnError


def test_plot_ranks_by_the_policies_latency_statistic(tmp_path, monkeypatch):
    """The plot and the policies share one Pareto function on one statistic (p99): a
    sub-network whose mean is fast but whose tail is slow is not highlighted."""
    import adn_edge.bench.pareto as bp

    r = report(with_energy=False)
    slow_tail = "0000"
    r["subnets"][slow_tail]["latency_ms"]["p99"] = 100.0  # mean still the fastest
    seen = {}
    real = bp.pareto_front

    def spy(costs, quality):
        seen.update(costs)
        return real(costs, quality)

    monkeypatch.setattr(bp, "pareto_front", spy)
    plot(r, tmp_path / "p.png")
    assert seen[slow_tail] == 100.0
    assert slow_tail not in real(seen, {c: e["gmacs"] for c, e in r["subnets"].items()})


def report(with_energy=True, with_gmacs=True):
    subs = {}
    for i in range(16):
        code = format(15 - i, "04b")
        depth = code.count("1")
        lat = 2.0 + depth * 1.5 + (i % 3) * 0.2
        e = {"latency_ms": {"mean": lat, "p50": lat, "p90": lat, "p99": lat, "min": lat, "max": lat},
             "throughput_ips": 1000 / lat, "iterations": 100,
             "power_w": 6.0 if with_energy else None, "energy_mj": lat * 6.0 if with_energy else None,
             "energy_above_idle_mj": None, "power_samples": 30 if with_energy else None}
        if with_gmacs:
            e["gmacs"] = 1.0 + depth + i * 0.01
        subs[code] = e
    return {"schema": 1, "device": {"kind": "cpu", "name": "Test CPU", "power_mode": None},
            "backend": "onnxruntime", "batch": 1, "power": {"source": "none"}, "subnets": subs}


PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_against_gmacs_when_accuracy_is_unknown(tmp_path):
    out = plot(report(), tmp_path / "sub" / "pareto.png")
    assert out.read_bytes().startswith(PNG)
    assert not [p for p in out.parent.iterdir() if p.name != "pareto.png"]  # no temp file left


def test_plot_against_accuracy_latency_only(tmp_path):
    acc = {format(i, "04b"): 70 + bin(i).count("1") * 1.5 for i in range(16)}
    out = plot(report(with_energy=False, with_gmacs=False), tmp_path / "p.png", accuracy=acc, title="t")
    assert out.read_bytes().startswith(PNG)


def test_plot_svg(tmp_path):
    assert b"<svg" in plot(report(), tmp_path / "p.svg").read_bytes()[:2000]


def test_plot_errors(tmp_path):
    with pytest.raises(AdnError, match="accuracy"):
        plot(report(with_gmacs=False), tmp_path / "p.png")
    with pytest.raises(AdnError, match="format"):
        plot(report(), tmp_path / "p.jpgx")
    assert not (tmp_path / "p.png").exists()


# -- what the plot shows: axes, title, labels, outliers, legend -----------------------------------


def _texts(ax):
    return [t for t in ax.texts]


def _boxes(fig, ax):
    from matplotlib.text import Text

    r = fig.canvas.get_renderer()
    out = []
    for t in ax.texts:
        t.get_window_extent(r)
        out.append((t.get_text(), Text.get_window_extent(t, r)))
    return out


def accuracy_report(outlier=None):
    r = report(with_energy=False)
    for code, e in r["subnets"].items():
        e["accuracy"] = 90.0 + code.count("1") + (0.5 if code.endswith("1") else 0.0)
    if outlier:
        code, value = outlier
        r["subnets"][code]["latency_ms"].update(p99=value, max=value)
    r["model"] = {"arch": "resnet_tiny"}
    r["precision"] = "int8"
    r["accuracy_source"] = {"file": "eval-int8.json", "dataset": "digits", "split": "test", "precision": "int8"}
    return r


def test_axes_say_what_and_in_which_units_and_the_title_names_model_precision_device():
    from adn_edge.bench.pareto import figure

    fig = figure(accuracy_report())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "p99 latency (ms)"
    assert ax.get_ylabel() == "top-1 accuracy (%) on digits (test)"
    title = fig._suptitle.get_text()
    assert "resnet_tiny" in title and "int8" in title and "Test CPU" in title and "cpu" in title
    gm = figure(report(with_energy=False))
    assert "GMACs" in gm.axes[0].get_ylabel()


def test_fractions_are_shown_in_percent():
    from adn_edge.bench.pareto import figure

    acc = {format(i, "04b"): 0.9 + bin(i).count("1") * 0.01 for i in range(16)}
    fig = figure(report(with_energy=False, with_gmacs=False), accuracy=acc)
    lo, hi = fig.axes[0].get_ylim()
    assert lo > 80 and hi < 100


def test_labels_never_overlap_and_stay_inside_and_every_pareto_point_is_labelled():
    from adn_edge.bench.pareto import figure
    from adn_edge.modeldir.pareto import pareto_front

    r = accuracy_report()
    fig = figure(r)
    ax = fig.axes[0]
    boxes = _boxes(fig, ax)
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    for i, (_, a) in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        assert not any(a.overlaps(b) for _, b in boxes[i + 1:])
    lat = {c: e["latency_ms"]["p99"] for c, e in r["subnets"].items()}
    front = pareto_front(lat, {c: e["accuracy"] for c, e in r["subnets"].items()})
    labels = [t for t, _ in boxes]
    assert set(front) <= set(labels) and all(len(t) == 4 for t in labels)  # codes, never a blob like 01111100


def test_an_outlier_does_not_squash_the_others():
    from adn_edge.bench.pareto import figure, outlier_limit

    assert outlier_limit([0.3, 0.31, 0.35, 0.4, 0.42, 60.6]) is not None
    assert outlier_limit([30.0, 35.0, 40.0, 50.0, 60.0]) is None  # a real spread is never cut
    fig = figure(accuracy_report(outlier=("1111", 500.0)))
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 50  # the others (< 10 ms) keep the axis
    texts = [t.get_text() for t in ax.texts]
    assert "1111 (500 ms)" in texts  # drawn at the edge, labelled with its true value
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("beyond the axis") for t in legend)


def test_no_dominated_legend_entry_when_nothing_is_dominated():
    from adn_edge.bench.pareto import figure

    r = report(with_energy=False)
    keep = ["0000", "0001", "0011", "0111", "1111"]
    r["subnets"] = {c: r["subnets"][c] for c in keep}
    for i, c in enumerate(keep):
        r["subnets"][c]["latency_ms"]["p99"] = 1.0 + i
        r["subnets"][c]["latency_ms"]["max"] = 1.0 + i
        r["subnets"][c]["accuracy"] = 90.0 + i
    legend = [t.get_text() for t in figure(r).axes[0].get_legend().get_texts()]
    assert not any("dominated" in t for t in legend) and any("Pareto-optimal" in t for t in legend)
    full = [t.get_text() for t in figure(accuracy_report()).axes[0].get_legend().get_texts()]
    assert "dominated" in full
