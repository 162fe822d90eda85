"""``adn-edge eval``: top-1/top-5 of every sub-network, written to the model directory's eval.json."""

from __future__ import annotations

from pathlib import Path

import typer

from adn_edge.cli.output import console, print_json, progress, table


def register(app: typer.Typer) -> None:
    @app.command(name="eval")
    def eval_cmd(
        target: Path = typer.Argument(..., help="A checkpoint (PyTorch evaluation of the materialised "
                                      "sub-networks) or an exported model directory (runtime backends)."),
        data: str = typer.Option(..., "--data", "-d", help="ImageFolder directory (its val/ or test/ split if "
                                 "present) or builtin / builtin:NAME (mnist, fashion, fashion-full: their fixed test split)."),
        arch: str = typer.Option(None, "--arch", "-a", help="Architecture of a checkpoint (default: from the "
                                 "file); must match a model directory's."),
        subnet: list[str] = typer.Option(["all"], "--subnet", "-s", help="Code(s): 1010, TFFF, super, base or "
                                         "all (default)."),
        out: Path = typer.Option(None, "--out", "-o", help="Directory for eval.json (default: the model directory, "
                                 "or engines/<arch> for a checkpoint)."),
        backend: str = typer.Option("auto", "--backend", help="Model directory: auto, onnxruntime, tensorrt, torch."),
        weights: str = typer.Option("auto", "--weights", help="Training checkpoint: auto (EMA if present), ema, "
                                    "model."),
        recalibrate: bool = typer.Option(False, "--recalibrate", help="Checkpoint: re-estimate each sub-network's "
                                         "BN statistics on training images first (BatchNorm archs)."),
        recal_samples: int = typer.Option(512, "--recal-samples", help="Training images for --recalibrate."),
        batch_size: int = typer.Option(128, "--batch-size", "-b", help="Evaluation batch size."),
        precision: str = typer.Option(None, "--precision", help="Model directory: graphs/engines to run (fp32, "
                                      "fp16, int8, best; backend default); written to eval-<precision>.json."),
        segmented: bool = typer.Option(False, "--segmented", help="Model directory: run the segment graphs or "
                                       "engines (as `EngineSwitcher.open(..., segmented=True)`)."),
        threads: int = typer.Option(None, "--threads", help="CPU threads for PyTorch."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Evaluate sub-networks on a dataset; results go to <model dir>/eval.json for policies and plots."""
        from adn_edge.errors import AdnError
        from adn_edge.train import data as data_mod
        from adn_edge.train import evaluate as ev

        if batch_size < 1:
            raise AdnError(f"--batch-size must be at least 1, not {batch_size}.")
        if threads is not None:
            import torch

            from adn_edge.fileio import check_threads

            torch.set_num_threads(check_threads(threads))
        if not target.exists():
            raise AdnError(f"{str(target)!r} does not exist.",
                           "Pass a checkpoint file or a model directory written by `adn-edge export`.")
        err = console(stderr=True)
        if target.is_dir():
            from adn_edge.modeldir import manifest as manifest_mod

            if not manifest_mod.path_in(target).exists():
                raise AdnError(f"{str(target)!r} is a directory without manifest.json, so it is not an exported "
                               "model directory.", "Pass a checkpoint file, or export first with `adn-edge export`.")
            man = manifest_mod.load(target)
            if arch is not None and arch != man.get("arch"):
                raise AdnError(f"{str(target)!r} holds {man.get('arch')}, but --arch {arch} was given.",
                               f"Drop --arch or pass --arch {man.get('arch')}.")
            if recalibrate:
                raise AdnError("--recalibrate applies to checkpoints; an exported directory's graphs are already "
                               "folded.", "Export with recalibration (adn-edge export --recalibrate DATA) instead.")
            variant = "-".join(v for v in ((precision or "").lower(), "segmented" if segmented else "") if v)
            prep = ev.preprocess_for_directory(target)
            dataset = data_mod.load_data(data, "test", prep)
            result = ev.evaluate_directory(target, dataset, subnet, backend=backend, batch_size=batch_size,
                                           iterate=None if as_json else progress, precision=precision,
                                           segmented=segmented)
            out_dir = out or target
            label = man.get("arch")
        else:
            if precision is not None or segmented:
                raise AdnError("--precision and --segmented choose among an exported directory's graphs; a "
                               "checkpoint is evaluated with PyTorch in float32.",
                               "Pass the model directory written by `adn-edge export`, or leave them out.")
            variant = ""
            from adn_edge import checkpoint as ckpt_mod
            from adn_edge.export.exporter import default_out_dir

            model, ckpt = ckpt_mod.load(target, arch=arch, weights=weights)
            prep = data_mod.preprocess_for_checkpoint(model.arch, ckpt.header)
            dataset = data_mod.load_data(data, "test", prep)
            batches = None
            if recalibrate:
                from adn_edge.train.recalibrate import calibration_batches, check_recalibratable

                check_recalibratable(model)
                train_set = data_mod.load_data(data, "train", prep)
                batches = calibration_batches(train_set, recal_samples)
            if not as_json:
                err.print(f"{model.arch}: evaluating {ckpt.weights} weights of {target} on {dataset.name} "
                          f"({dataset.split}, {len(dataset)} images)")
            result = ev.evaluate_model(model, dataset, subnet, batch_size=batch_size, recalibrate_with=batches,
                                       recal_samples=recal_samples, iterate=None if as_json else progress)
            # PyTorch on the checkpoint itself: no graphs, so readers trust it only for
            # unrecalibrated graphs of these very weights.
            result.identity = {"source_sha256": ckpt.source_record().get("sha256"),
                               "recalibrated": batches is not None, "graphs": None}
            out_dir = out or default_out_dir(model.arch)
            label = model.arch
        path = ev.write_eval(out_dir, result, variant=variant)
        record = result.record()
        if as_json:
            print_json({**record, "file": str(path)})
            return
        table(f"{label} on {record['dataset']} ({record['split']}, {record['samples']} images, {record['source']}"
              f"{', recalibrated' if record['recalibrated'] else ''})", ["code", "top-1 %", "top-5 %"],
              [(c, f"{s['top1']:.2f}", "-" if s["top5"] is None else f"{s['top5']:.2f}")
               for c, s in record["subnets"].items()])
        console().print(f"wrote {path}")
