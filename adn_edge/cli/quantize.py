"""``adn-edge quantize``: a calibrated INT8 Q/DQ graph for every exported sub-network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from adn_edge.cli.output import console, print_json, progress, table


def register(app: typer.Typer) -> None:
    from adn_edge.quantize.defaults import (
        DEFAULT_METHOD,
        DEFAULT_PERCENTILE,
        DEFAULT_SAMPLES,
        DROP_WARN_POINTS,
        MIN_SAMPLES,
        RECOMMENDED_SAMPLES,
    )

    @app.command()
    def quantize(
        directory: Path = typer.Argument(..., help="Model directory written by `adn-edge export`."),
        calib: str = typer.Option(..., "--calib", "-c", help="Calibration images: a folder (sub-folders are "
                                  "searched; preprocessed as the manifest says) or builtin / builtin:NAME (mnist, fashion: the "
                                  "built-in training split)."),
        subnet: list[str] = typer.Option(["all"], "--subnet", "-s", help="Code(s): 1010, TFFF, super, base or all "
                                         "(default: every exported sub-network)."),
        method: str = typer.Option(DEFAULT_METHOD, "--method", "-m", help="Activation ranges: minmax, entropy or "
                                   "percentile."),
        samples: int = typer.Option(DEFAULT_SAMPLES, "--samples", "-n", help=f"Calibration images per sub-network "
                                    f"(at least {MIN_SAMPLES}; fewer than {RECOMMENDED_SAMPLES} warns)."),
        percentile: float = typer.Option(DEFAULT_PERCENTILE, "--percentile", help="For --method percentile."),
        data: str = typer.Option("auto", "--data", "-d", help="Evaluation data for INT8 vs FP32 top-1: builtin, "
                                 "an ImageFolder directory (its val/ split when present), none, or auto (the "
                                 "built-in test split when --calib is builtin)."),
        eval_samples: int = typer.Option(None, "--eval-samples", help="Evaluate on at most this many images."),
        drop_threshold: float = typer.Option(DROP_WARN_POINTS, "--max-drop", help="Warn when INT8 top-1 is more "
                                             "than this many points below FP32."),
        force: bool = typer.Option(False, "--force", help="Re-quantise sub-networks whose INT8 graph is up to date."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Recalibrate even when cached ranges match."),
        threads: int = typer.Option(None, "--threads", help="CPU threads for the accuracy check."),
        segments: bool = typer.Option(False, "--segments", help="Quantise the 2*S segment graphs of `export "
                                      "--segments` instead (each part calibrated on the activations of every "
                                      "combination of the forms before it), for segmented mode; reports the "
                                      "INT8 vs FP32 top-1 of every sub-network chained from them."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Calibrate every sub-network on its own and write <arch>_<code>.int8.onnx (Q/DQ, for TensorRT and
        ONNX Runtime), with INT8 vs FP32 accuracy in the manifest and eval-int8.json. With --segments: the
        segment graphs, <arch>_seg<k>_<kind>.int8.onnx, and eval-int8-segmented.json."""
        from adn_edge.errors import AdnError
        from adn_edge.fileio import check_threads
        from adn_edge.quantize import QuantizeOptions, quantize_directory, quantize_segments

        check_threads(threads)
        err = console(stderr=True)
        opts = QuantizeOptions(method=method.lower(), samples=samples, percentile=percentile, eval_data=data,
                               eval_samples=eval_samples, drop_threshold=drop_threshold, force=force,
                               use_cache=not no_cache, threads=threads)

        def say(msg: str) -> None:
            err.print(msg, markup=False, soft_wrap=True)

        if segments:
            if any(str(s).strip().lower() != "all" for s in subnet):
                raise AdnError("--segments quantises the segment graphs, which chain into every sub-network; "
                               "--subnet does not apply to them.",
                               "Leave --subnet out (or quantise monolithic graphs without --segments).")
            seg_rec = quantize_segments(directory, calib, opts, iterate=None if as_json else progress,
                                        log=say).record()
            if as_json:
                print_json(seg_rec)
            else:
                _segments_tables(seg_rec, directory, err)
            return
        report = quantize_directory(directory, calib, subnet, opts, iterate=None if as_json else progress,
                                    log=say)
        rec = report.record()
        if as_json:
            print_json(rec)
            return

        rows = []
        for s in rec["subnets"]:
            a = s["accuracy"] or {}
            rows.append((s["code"], "new" if s["status"] == "quantized" else "kept",
                         {"hit": "cached", "miss": "calibrated"}.get(s["calibration_cache"], "-"),
                         f"{s['qdq'].get('quantized_layers', '-')}/{s['qdq'].get('weighted_layers', '-')}",
                         _pct(a.get("top1_fp32")), _pct(a.get("top1_int8")), _pct(a.get("agreement")),
                         _pct(a.get("drop")), "-" if s["logit_rel_err"] is None else f"{s['logit_rel_err']:.3f}"))
        cal = rec["calibration"]
        table(f"{rec['arch']} INT8 ({rec['method']['name']}, {cal['samples']} images from {cal['source']})",
              ["code", "graph", "ranges", "int8 layers", "fp32 top-1", "int8 top-1", "agree %", "drop", "logit err"],
              rows)
        for note in rec["notes"]:
            err.print(f"note: {note}", markup=False)
        files = ", ".join(rec["eval_files"]) if rec["eval_files"] else "no evaluation file"
        console().print(f"wrote {len(rec['subnets'])} INT8 graph record(s) to {directory / 'manifest.json'}; "
                        f"{files}; {rec['seconds']:.1f} s", markup=False)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _segments_tables(rec: dict[str, Any], directory: Path, err: Any) -> None:
    """The parts (graph kept or new, ranges, prefixes fed) and the chains (INT8 vs FP32)."""
    rows: list[tuple[str, ...]] = [(str(f["part"]), f["kind"], "new" if f["status"] == "quantized" else "kept",
             {"hit": "cached", "miss": "calibrated"}.get(f["calibration_cache"], "-"),
             str(len(f["prefixes"]) or "-"), str(f["inputs"] or "-"),
             f"{f['qdq'].get('quantized_layers', '-')}/{f['qdq'].get('weighted_layers', '-')}")
            for f in rec["parts"]]
    cal = rec["calibration"]
    table(f"{rec['arch']} INT8 segments ({rec['method']['name']}, {cal['samples']} images from {cal['source']}, "
          "every prefix)", ["part", "form", "graph", "ranges", "prefixes", "inputs", "int8 layers"], rows)
    rows = []
    for s in rec["subnets"]:
        a = s["accuracy"] or {}
        rows.append((s["code"], _pct(a.get("top1_fp32")), _pct(a.get("top1_int8")), _pct(a.get("agreement")),
                     _pct(a.get("drop")), f"{s['logit_rel_err']:.3f}"))
    table(f"{rec['arch']} sub-networks through the segments, INT8 vs FP32",
          ["code", "fp32 top-1", "int8 top-1", "agree %", "drop", "logit err"], rows)
    for note in rec["notes"]:
        err.print(f"note: {note}", markup=False)
    files = ", ".join(rec["eval_files"]) if rec["eval_files"] else "no evaluation file"
    console().print(f"wrote {len(rec['parts'])} INT8 segment graph record(s) to {directory / 'manifest.json'}; "
                    f"{files}; {rec['seconds']:.1f} s", markup=False)
