"""``adn-edge doctor``: render and write the report of :mod:`adn_edge.doctor` (the checks)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import typer

from adn_edge.doctor import FAIL, INFO, MISSING, OK, WARN, collect
from adn_edge.fileio import to_json, write_text

MARK = {OK: "ok", INFO: "info", WARN: "warn", MISSING: "MISSING", FAIL: "FAIL"}


def render(report: dict[str, Any], report_path: Path | None) -> str:
    lines = ["adn-edge doctor: can this machine build and run TensorRT engines?"]
    for c in report["checks"]:
        lines.append(f"  {MARK[c['status']]:<8} {c['title']}: {c['summary']}")
        if c.get("fix"):
            lines.extend(textwrap.wrap("fix: " + c["fix"], width=100, initial_indent=" " * 11,
                                       subsequent_indent=" " * 16, break_long_words=False, break_on_hyphens=False))
    if report_path is not None:
        lines.append(f"report: {report_path} (attach it to a bug report)")
    lines.append(report["verdict"])
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        full: bool = typer.Option(False, "--full", help="Also export the embedded model, build fp32 and fp16 engines, "
                                  "run them (CUDA graphs off and on) and compare with ONNX Runtime (about a minute)."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON report (nothing else on stdout)."),
        report: Path = typer.Option(Path("adn-edge-doctor.json"), "--report",
                                    help="Where to write the JSON report (--no-report: nowhere)."),
        no_report: bool = typer.Option(False, "--no-report", help="Write no report file."),
        cuda: str = typer.Option("auto", "--cuda", help="CUDA binding for --full: auto, cuda-python or pycuda."),
        device: int = typer.Option(0, "--device", help="CUDA device index."),
        keep: Path = typer.Option(None, "--keep", help="Keep the --full model directory here (default: a temporary "
                                  "directory, removed)."),
    ) -> None:
        """Check this machine for the TensorRT path (Jetson or GPU) and say what to install."""
        def log(msg: str) -> None:
            sys.stderr.write(msg + "\n")

        rep = collect(full=full, cuda=cuda, device=device, keep=keep, log=log)
        path = None if no_report else report
        if path is not None:
            try:
                write_text(path, to_json(rep, default=str) + "\n")  # atomic: never half a report
            except OSError as exc:
                sys.stderr.write(f"warning: could not write the report {path}: {exc}\n")
                path = None
        if as_json:
            sys.stdout.write(to_json(rep, default=str) + "\n")
        else:
            sys.stdout.write(render(rep, path.resolve() if path is not None else None) + "\n")
        raise typer.Exit(int(rep["exit_code"]))


__all__ = ["register", "render"]

