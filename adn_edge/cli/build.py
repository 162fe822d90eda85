"""``adn-edge build``: ONNX sub-networks -> TensorRT engines, on the device that runs them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from adn_edge.cli.output import console, print_json, table

if TYPE_CHECKING:
    from adn_edge.backends.tensorrt.build import BuildEvent


def _reporter(quiet: bool) -> Callable[[BuildEvent], None]:
    """Progress on stderr, a line per event: builds take minutes each and a silent
    terminal looks hung; stdout stays clean for --json."""
    err = console(stderr=True)

    def report(ev: BuildEvent) -> None:
        if ev.kind == "warning":
            err.print(f"[yellow]warning:[/] {ev.message}")
        elif not quiet and ev.kind in ("start", "built", "skipped", "info"):
            where = f"[{ev.index}/{ev.total}] " if ev.index else ""
            err.print(f"{where}{ev.message}")

    return report


def refuse_builtin_calibration(directory: Path, calib: str | None) -> None:
    """``--calib builtin[:NAME]`` (a spec ``adn-edge quantize --calib`` takes) is refused
    here with the route that works: TensorRT's calibrator reads image files
    (:class:`~adn_edge.backends.tensorrt.calibration.CalibrationSet`), the built-in
    datasets are arrays, while a Q/DQ graph from ``quantize`` carries its scales. The
    spec is recognised by the function ``quantize`` resolves it with
    (:func:`adn_edge.train.data.builtin_name`), asked only when no such folder exists,
    so a folder named ``builtin`` still works and a robot without torch never imports it."""
    if calib is None or Path(calib).exists():
        return
    try:
        from adn_edge.train.data import builtin_name
    except ImportError:  # no torch: not a dataset it could load either; the folder check reports it
        return
    name = builtin_name(calib)  # an unknown builtin:NAME is an AdnError listing the known ones
    if name is None:
        return
    from adn_edge.errors import AdnError

    raise AdnError(f"--calib {calib} names the built-in {name} dataset, but `adn-edge build` calibrates with "
                   "TensorRT's calibrator, which reads a folder of image files.",
                   f"Calibrate with `adn-edge quantize {directory} --calib {calib}` (INT8 Q/DQ graphs), then run "
                   f"`adn-edge build {directory} --precision int8` without --calib: the engines are built from "
                   "those graphs. Or pass --calib a folder of training images.")


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        directory: Path = typer.Argument(..., help="Model directory written by `adn-edge export`."),
        subnet: list[str] = typer.Option(["all"], "--subnet", "-s", help="Code(s) to build: 1010, TFFF, super, "
                                                                          "base or all; repeat for several."),
        precision: str = typer.Option("fp16", "--precision", "-p", help="fp32, fp16, int8 or best (FP16+INT8)."),
        calib: str = typer.Option(None, "--calib", help="Folder of images for INT8 calibration (a few hundred; "
                                  "sub-folders are searched). For builtin data: `adn-edge quantize DIR --calib "
                                  "builtin`, then build without --calib."),
        timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache shared by all builds "
                                                                       "(default: <arch>.timing.cache in DIR)."),
        min_batch: int = typer.Option(None, "--min-batch", help="Smallest batch the engines accept (default 1)."),
        opt_batch: int = typer.Option(None, "--opt-batch", help="Batch the kernels are tuned for (default min)."),
        max_batch: int = typer.Option(None, "--max-batch", help="Largest batch (default 8; sizes the buffers)."),
        workspace_mb: int = typer.Option(1024, "--workspace-mb", help="Builder workspace limit in MiB."),
        opt_level: int = typer.Option(3, "--opt-level", help="Builder optimisation level 0-5."),
        segments: bool = typer.Option(False, "--segments", help="Build the 2*S segment engines (from `export "
                                      "--segments`) for segmented mode instead of one engine per sub-network."),
        force: bool = typer.Option(False, "--force", help="Rebuild even up-to-date engines."),
        cuda: str = typer.Option("auto", "--cuda", help="CUDA binding: auto, cuda-python or pycuda."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show TensorRT's info messages."),
        as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Build TensorRT engines for exported sub-networks (skips up-to-date ones)."""
        from adn_edge.backends.tensorrt.build import build_directory

        refuse_builtin_calibration(directory, calib)
        # A BuildFailure (exit 1: the toolchain failed, not the input) is printed by the app.
        results = build_directory(
            directory, subnets=subnet, precision=precision, calib=calib, timing_cache=timing_cache,
            min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, workspace_mb=workspace_mb,
            opt_level=opt_level, force=force, progress=_reporter(quiet=as_json), cuda=cuda, verbose=verbose,
            segments=segments,
        )
        if as_json:
            print_json(results)
            return
        table(f"TensorRT engines in {directory}",
              ["segment" if segments else "code", "precision", "status", "observed", "build s", "engine", "reason"],
              [(r["code"], r["precision"], r["status"], r["observed"],
                f"{r['build_seconds']:.1f}" if r["build_seconds"] is not None else "-", r["engine"],
                r["reason"]) for r in results])
        if results:
            r = results[0]
            console().print(f"TensorRT {r['tensorrt_version']} on {r['gpu']} (compute capability "
                            f"{r['compute_capability']})")
