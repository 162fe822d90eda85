"""``adn-edge info``: what a checkpoint, ONNX graph, engine or model directory holds."""

from __future__ import annotations

from pathlib import Path

import typer

from adn_edge.cli.output import console, print_json, table


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        path: Path = typer.Argument(..., help="A checkpoint, .onnx, .engine or model directory."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Describe a checkpoint, an ONNX graph, a TensorRT engine or a model directory."""
        from adn_edge.describe import describe

        d = describe(path)
        if as_json:
            print_json(d)
            return
        c = console()
        if d["kind"] == "model-directory":
            c.print(f"[bold]{d['path']}[/]: {d['arch']}, {d['num_stages']} skippable stages, "
                    f"{d['num_classes']} classes, input {d['input']['shape']}, source {d['source']}")
            table("sub-networks", ["code", "skip_cfg", "GMACs", "params", "files", "engines", "parity"],
                  [(s["code"], s["skip_cfg"], s["gmacs"], f"{s['params']:,}", ",".join(s["files"]),
                    ",".join(s["engines"]) or "-",
                    f"{s['parity_fp32']:.1e}" if s["parity_fp32"] is not None else "-") for s in d["subnets"]])
            if d["segments"]:
                table("segments (segmented mode)", ["segment", "form", "input", "output", "files", "engines"],
                      [(s["segment"], s["kind"], s["input_shape"], s["output_shape"], ",".join(s["files"]),
                        ",".join(s["engines"]) or "-") for s in d["segments"]])
            if d["results"]:
                c.print("results: " + ", ".join(d["results"]))
            return
        for k, v in d.items():
            if k == "ops" and isinstance(v, dict):
                v = ", ".join(f"{op}x{n}" for op, n in sorted(v.items(), key=lambda kv: -kv[1]))
            c.print(f"[bold]{k}[/]: {v}")
