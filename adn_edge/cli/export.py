"""``adn-edge export``: checkpoint -> one verified ONNX graph per sub-network (and, with
``--segments``, the 2*S per-stage graphs of segmented mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from adn_edge.cli.output import console, gmacs, print_json, progress, table


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        checkpoint: Path = typer.Argument(None, help="ADN weights: official .pth, training checkpoint, "
                                                     "safetensors or adn-edge format."),
        arch: str = typer.Option(None, "--arch", "-a", help="Architecture (default: from the checkpoint)."),
        subnet: list[str] = typer.Option(["all"], "--subnet", "-s", help="Code(s) to export: 1010, TFFF, super, "
                                                                          "base or all; repeat for several."),
        out: Path = typer.Option(None, "--out", "-o", help="Model directory (default engines/<arch>)."),
        weights: str = typer.Option("auto", "--weights", help="From a training checkpoint: auto (EMA if "
                                                              "present), ema or model."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write a float16 graph (float32 I/O) per sub-network."),
        static_batch: int = typer.Option(None, "--static-batch", help="Fix the batch size (default: dynamic)."),
        input_size: int = typer.Option(None, "--input-size", help="Image side (default: the architecture's)."),
        num_classes: int = typer.Option(None, "--num-classes", help="Classes (default: inferred from the head)."),
        recalibrate: str = typer.Option(None, "--recalibrate", help="Re-estimate each sub-network's BatchNorm "
                                        "statistics on this data before folding: 'builtin' or an ImageFolder "
                                        "directory (its train/ split when present). Recommended for ADNs."),
        recal_samples: int = typer.Option(512, "--recal-samples", help="Images used per sub-network."),
        random_init: bool = typer.Option(False, "--random-init", help="No checkpoint: export a randomly "
                                                                      "initialised model (for trying the pipeline)."),
        segments: bool = typer.Option(False, "--segments", help="Also write the 2*S segment graphs (each stage "
                                      "full and skipped; chained, they run every sub-network) for segmented mode. "
                                      "With --recalibrate they take each sub-network's statistics as correction "
                                      "inputs (<arch>_seg_corrections.npz)."),
        correction_threshold: float = typer.Option(None, "--correction-threshold", help="With --segments "
                                                   "--recalibrate: keep a convolution's correction only where some "
                                                   "sub-network's scale or mean differs from the folded reference "
                                                   "by more than this (in units of the channel's output scale); "
                                                   "default: every correction (exact)."),
        correction_reference: str = typer.Option("checkpoint", "--correction-reference", help="With --segments "
                                                 "--recalibrate: the statistics folded into the segment weights, "
                                                 "'checkpoint' or 'joint' (re-estimated over all sub-networks)."),
        as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Export sub-networks of an ADN checkpoint to ONNX, verified against PyTorch."""
        from adn_edge.errors import AdnError
        from adn_edge.export import Exporter, ExportOptions
        from adn_edge.export.exporter import default_out_dir

        if checkpoint is None and not random_init:
            raise AdnError("No checkpoint was given.", "Pass a checkpoint file, or --random-init --arch ARCH "
                                                       "to try the pipeline on random weights.")
        if static_batch is not None and static_batch < 1:
            raise AdnError(f"--static-batch must be at least 1, not {static_batch}.")
        if random_init:
            if checkpoint is not None:
                raise AdnError("Give either a checkpoint or --random-init, not both.")
            if arch is None:
                raise AdnError("--random-init needs --arch.")
            from adn_edge.models import create_model, get_spec
            from adn_edge.models.random_weights import randomize

            model = randomize(create_model(arch, num_classes=num_classes),
                              input_size=input_size or get_spec(arch).input_size)
            source = {"path": None, "sha256": "random-init", "container": "none", "weights": "random-init"}
        else:
            from adn_edge import checkpoint as ckpt_mod

            model, ckpt = ckpt_mod.load(checkpoint, arch=arch, num_classes=num_classes, weights=weights)
            source = ckpt.source_record()
        out_dir = out or default_out_dir(model.arch)
        if segments:  # refused now, before recalibration data is read or anything is written
            from adn_edge.export.segments import check_correction_options, refuse_recalibration

            refuse_recalibration(None if recalibrate is None else {"data": recalibrate}, out_dir)
            check_correction_options(recalibrate is not None, correction_threshold, correction_reference)
        elif correction_threshold is not None or correction_reference != "checkpoint":
            raise AdnError("--correction-threshold and --correction-reference apply to corrected segment graphs "
                           "only.", "Add --segments --recalibrate DATA, or leave them out.")
        batches = None
        if recalibrate is not None:
            from adn_edge.train.recalibrate import batches_from_data, check_recalibratable

            check_recalibratable(model)
            batches = batches_from_data(recalibrate, model.arch, recal_samples, input_size)
        opts = ExportOptions(fp16=fp16, dynamic_batch=static_batch is None, batch=static_batch or 1,
                             input_size=input_size, recalibration=batches, recalibration_source=recalibrate)
        exporter = Exporter(model, out_dir, source, opts)
        codes = exporter.resolve(subnet)
        seg_exporter = None
        if segments:
            from adn_edge.export import segments as seg_mod

            # shares the manifest the sub-networks go into
            seg_exporter = seg_mod.SegmentExporter(exporter, correction_threshold, correction_reference)
        if not as_json:
            console(stderr=True).print(f"{model.arch}: exporting {len(codes)} sub-network(s) to {out_dir} "
                                       f"(weights: {source['weights']})")
        results = exporter.export(codes, iterate=progress)
        summary: dict[str, Any] = {"arch": model.arch, "out": str(out_dir), "weights": source["weights"],
                                   "subnets": [r.summary() for r in results]}
        if seg_exporter is not None:
            if not as_json:
                console(stderr=True).print(f"{model.arch}: exporting {2 * seg_exporter.count} segment graphs")
            summary["segments"] = seg_mod.summary(seg_exporter.export())
        if as_json:
            print_json(summary)
            return
        rows = []
        for r in results:
            p = r.parity["onnx"]
            p16 = r.parity.get("onnx_fp16")
            rows.append((r.code, gmacs(r.gmacs), f"{r.params:,}", r.nodes, f"{p.rel_err:.1e}",
                         f"{p16.rel_err:.1e}" if p16 else "-", f"{r.seconds:.1f}"))
        table(f"exported to {out_dir} (parity: relative error of ONNX Runtime vs PyTorch)",
              ["code", "GMACs", "params", "nodes", "parity fp32", "parity fp16", "s"], rows)
        if "segments" in summary:
            _segments_table(out_dir, summary["segments"])


def _segments_table(out_dir: Path, seg: dict[str, Any]) -> None:
    parity = f"fp32 {seg['parity']['rel_err_max']:.1e}"
    if seg.get("parity_fp16"):
        parity += f", fp16 {seg['parity_fp16']['rel_err_max']:.1e}"
    rows = [(p["index"], p["input"], p["output"], p["files"]["full"], p["files"]["skip"],
             "yes" if "files_fp16" in p else "-") for p in seg["parts"]]
    table(f"segments in {out_dir} (parity of all {2 ** seg['count']} chains, worst: {parity})",
          ["part", "input", "output", "full", "skip", "fp16"], rows)
    c = seg.get("corrections")
    if c:
        convs = c.get("convs") or {}
        console(stderr=True).print(
            f"corrections: {c['file']} ({c.get('inputs')} vectors; reference {c.get('reference')}, threshold "
            f"{c.get('threshold')}; convolutions corrected: {convs.get('affine', 0)} scale+shift, "
            f"{convs.get('shift', 0)} shift only, {convs.get('none', 0)} none)")
