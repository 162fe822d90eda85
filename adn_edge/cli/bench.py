"""``adn-edge bench``: latency and energy per sub-network on Orin, CUDA GPUs or CPUs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from adn_edge.cli.output import console, print_json, progress


def parse_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to keyword options (true/false, integers, finite floats, else
    text); ``nan``/``inf`` would otherwise become floats that pass every comparison."""
    from adn_edge.errors import AdnError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise AdnError(f"--backend-option {item!r} is not KEY=VALUE.", "Example: -O graph_optimization=all.")
        value: Any = raw.strip()
        low = value.lower()
        if low in ("true", "false"):
            value = low == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(value)
                    break
                except ValueError:
                    pass
            if isinstance(value, float) and not math.isfinite(value):
                raise AdnError(f"--backend-option {item!r} is not a finite number.",
                               "Pass a number, such as -O max_batch=64.")
        out[key.strip()] = value
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        directory: Path = typer.Argument(..., help="Model directory written by `adn-edge export`."),
        device: str = typer.Option(..., "--device", "-d", help="orin, cuda or cpu."),
        backend: str = typer.Option("auto", "--backend", help="auto, tensorrt, onnxruntime or torch."),
        power: str = typer.Option("auto", "--power", help="auto (from --device), tegrastats, nvml or none."),
        subnet: list[str] = typer.Option(["all"], "--subnet", "-s", help="Codes to bench (default all)."),
        precision: str = typer.Option(None, "--precision", help="Engine/graph precision (backend default)."),
        batch: int = typer.Option(1, "--batch", help="Batch size."),
        iterations: int = typer.Option(100, "--iterations", "-n", help="Timed calls per sub-network (at least)."),
        duration: float = typer.Option(0.0, "--duration", help="Timed seconds per sub-network (at least)."),
        rounds: int = typer.Option(None, "--rounds", help="Time every sub-network in this many interleaved "
                                   "blocks, a new random order of sub-networks each round, so bursts of noise "
                                   "fall on all alike (default: blocks of ~10 calls; 1 when power is measured, "
                                   "as energy needs one long window per sub-network)."),
        warmup: int = typer.Option(10, "--warmup", help="Warm-up calls per sub-network (at least)."),
        warmup_s: float = typer.Option(0.5, "--warmup-seconds", help="Warm-up seconds per sub-network (at least)."),
        idle: float = typer.Option(5.0, "--idle-seconds", help="Idle baseline length when power is measured."),
        interval: float = typer.Option(50.0, "--interval-ms", help="Power sampling interval."),
        threads: int = typer.Option(None, "--threads", help="CPU threads for the backend (default on --device cpu: "
                                    "usable CPUs - 1, at least 1, which keeps the latency tail steady; "
                                    "see benchmarks/results/timing_noise.json)."),
        hz: float = typer.Option(None, "--hz", help="Also time a paced loop at this rate, as a robot runs: one "
                                 "inference every 1/N s, sleeping between; reported beside the hot loop, with "
                                 "deadline misses at that rate."),
        paced_iterations: int = typer.Option(None, "--paced-iterations", help="Timed calls of the paced loop per "
                                             "sub-network (default: --iterations)."),
        deadline_ms: float = typer.Option(None, "--deadline-ms", help="Deadline per inference for the miss counts "
                                          "(default: the period, 1000/N ms)."),
        backend_option: list[str] = typer.Option([], "--backend-option", "-O", help="KEY=VALUE passed to the "
                                                  "backend, repeatable (e.g. -O graph_optimization=all "
                                                  "-O share_weights=false for ONNX Runtime speed over memory)."),
        segmented: bool = typer.Option(None, "--segmented/--monolithic", help="Run each sub-network as its chain "
                                       "of segment graphs (`adn-edge export --segments`; writes "
                                       "bench-<device>-segmented.json) or as its own graph. Default: what "
                                       "EngineSwitcher.open chooses (segments on ONNX Runtime's CPU provider when "
                                       "the directory has them)."),
        plot: Path = typer.Option(None, "--plot", help="Write Pareto plots to this .png/.svg/.pdf."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Measure latency (and energy, when a power source is used) of every sub-network."""
        from adn_edge.bench import pareto, report
        from adn_edge.bench.harness import BenchOptions, run_bench

        opts = BenchOptions(device=device.strip().lower(), backend=backend, power=power, subnets=subnet,
                            precision=precision, batch=batch, iterations=iterations, rounds=rounds, duration_s=duration,
                            warmup_iters=warmup, warmup_s=warmup_s, idle_s=idle, interval_ms=interval,
                            threads=threads, backend_options=parse_options(backend_option), segmented=segmented,
                            hz=hz, paced_iterations=paced_iterations, deadline_ms=deadline_ms)
        if hz and not as_json:
            n_paced = paced_iterations or iterations
            console(stderr=True).print(f"paced loop at {hz:g} Hz: {n_paced} calls per sub-network, about "
                                       f"{n_paced / hz:.1f} s each (--paced-iterations to change)")
        result = run_bench(directory, opts, iterate=progress)
        if plot is not None:
            pareto.plot(result, plot)  # the report carries the evaluated accuracies
        if as_json:
            print_json(result)
            return
        c = console()
        report.print_table(result, c)  # with one paragraph on unstable timings, if any
        source = result.get("accuracy_source") or {}
        if source.get("note"):
            c.print(source["note"])
        if not result["power"].get("measured"):
            c.print(result["power"].get("note", report.NOT_MEASURED))
        c.print(f"wrote {directory / report.report_filename(result)}"
                + (f" and {plot}" if plot else ""))
