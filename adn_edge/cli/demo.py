"""``adn-edge demo``: export, verify, evaluate, bench and switch the embedded model on the CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from adn_edge.cli.output import console, print_json, progress, table


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("engines/demo"), "--out", "-o", help="Model directory to write."),
        iterations: int = typer.Option(400, "--iterations", "-n", help="Timed calls per sub-network (interleaved "
                                        "in blocks of 10, as `adn-edge bench` does)."),
        recal_samples: int = typer.Option(512, "--recal-samples", help="BN recalibration images per sub-network."),
        threads: int = typer.Option(None, "--threads", help="CPU threads (default: as `adn-edge bench`, usable "
                                    "CPUs - 1, at least 1)."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Run the whole pipeline on the embedded ADN (no download, no GPU): export every
        sub-network, verify, evaluate, bench on the CPU, switch, plot the Pareto front."""
        from adn_edge.demo import run_demo

        c = console(stderr=as_json)
        result = run_demo(out, iterations=iterations, recal_samples=recal_samples, threads=threads,
                          log=lambda s: c.print(s, highlight=False), iterate=progress)
        if as_json:
            print_json(result.summary())
            return
        subs = result.bench["subnets"]
        rows = []
        for code, e in sorted(subs.items(), key=lambda kv: kv[1]["latency_ms"]["p99"]):
            rows.append((code + (" *" if code in result.pareto else ""), e.get("skip_cfg", ""),
                         f"{e['gmacs']:.4f}", f"{result.accuracy.get(code, float('nan')):.2f}",
                         f"{e['latency_ms']['p50']:.3f}", f"{e['latency_ms']['p99']:.3f}",
                         f"{100 * e['latency_cv']:.1f}" + (" !" if e.get("warning") else "")))
        table("sub-networks (* = Pareto-optimal in p99 latency vs top-1: no other is both faster and more accurate; "
              "! = unstable timing)", ["code", "skip_cfg", "GMACs", "top-1 %", "p50 ms", "p99 ms", "CV %"], rows)
        c.print(f"plot: {result.plot}   model directory: {result.directory}   "
                f"time: {result.seconds['total']:.0f} s ({', '.join(f'{k} {v:.0f}s' for k, v in result.seconds.items() if k != 'total')})")
