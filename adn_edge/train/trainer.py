"""Training Adaptive Depth Networks with the official self-distillation recipe.

Per batch (the official research code's recipe), both passes in train mode on the
same images:

1. super-net (no stage skipped): ``alpha * CE(logits, y)`` with label smoothing;
2. base-net (every stage skipped): the super-net's top-k logits (indices from the
   super-net) are the detached target of a temperature-scaled KL divergence
   (``batchmean``, times ``T^2``), plus with ``feature_kd`` the same KL between the
   globally pooled outputs of stages 2..S (the official ``--fpn`` on layer2-4);
   weighted ``1 - alpha``;
3. one optimizer step on the summed gradients.

``sandwich=k`` (not in the paper) adds k sampled mixed sub-networks to step 2, each
distilled from the super-net like the base-net (:mod:`~adn_edge.train.adn_step`).

Both passes run inside one module call (:mod:`~adn_edge.train.adn_step` says why). This
module is the loop with its checkpoints and resume; the losses, optimizer, EMA, torchrun
and ``--init-from`` each have a module of their own beside it.

``mode="plain"`` is ordinary training (super-net cross-entropy, weight 1, no base-net
pass): the baseline of the benchmark's "train normally, then skip" variant. Its
``_skip`` twins are never trained, so after training they are set to copies of their
main norms, which is what skipping stages of a normally trained network means.

Outputs in ``out_dir`` (containers: docs/checkpoints.md): ``checkpoint.pth`` (the
official training-checkpoint layout: ``model``, ``model_ema``, ``optimizer``,
``lr_scheduler``, ``epoch``, ``args``, plus ``scaler`` with AMP; read by
``adn_edge.checkpoint.read`` with ``weights_only=True``; ``--resume`` continues from
it), ``model.safetensors`` (our format), ``model.pth`` (official plain weights),
``model_ema.safetensors`` with EMA, ``log.jsonl`` (losses every ``log_every`` steps,
per-epoch super/base accuracy) and, with ``final_eval``, ``eval.json`` for every
sub-network (docs/model-directory.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.fileio import atomic_path, ensure_writable_dir
from adn_edge.models.base import ADNModel
from adn_edge.train.adn_step import _ADNStep
from adn_edge.train.config import TrainConfig
from adn_edge.train.distributed import resolve_device, setup_distributed, wrap_ddp
from adn_edge.train.ema import ema_decay_per_update, make_ema, update_ema
from adn_edge.train.from_plain import copy_main_norms_to_twins, init_from_plain, plain_eval_copy
from adn_edge.train.losses import feature_kd_loss, kd_loss, recipe_losses
from adn_edge.train.optimizer import lr_lambda, make_optimizer
from adn_edge.fileio import to_json

# TrainConfig and the loss and plain-init names stay importable from here, where they were first.
__all__ = ["Iterate", "TrainConfig", "TrainResult", "Trainer", "copy_main_norms_to_twins", "feature_kd_loss",
           "init_from_plain", "kd_loss", "train"]

Iterate = Callable[[Sequence[Any], str], Iterable[Any]]


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    model: ADNModel | None = None


class Trainer:
    """One training run: build everything from a :class:`TrainConfig`, then :meth:`fit`."""

    def __init__(self, cfg: TrainConfig, iterate: Iterate | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.iterate = iterate
        self.dist = setup_distributed("cuda" if cfg.device.startswith("cuda") or
                                      (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
        try:
            self._build(cfg, echo)
        except BaseException:
            self.dist.leave_group()
            raise

    def _build(self, cfg: TrainConfig, echo: Callable[[str], None] | None) -> None:
        from adn_edge.models import create_model, get_spec
        from adn_edge.train import data as data_mod

        self.device = resolve_device(cfg, self.dist)
        self.echo = echo if (echo and self.dist.main) else (lambda _msg: None)
        if cfg.amp and self.device.type != "cuda":
            raise AdnError("--amp (mixed precision) needs a CUDA GPU; this run is on the CPU.",
                           "Drop --amp, or run on a machine with a GPU.")
        self.out_dir = ensure_writable_dir(cfg.out_dir) if self.dist.main else Path(cfg.out_dir)
        spec = get_spec(cfg.arch)
        self.spec = spec
        self.prep = data_mod.preprocess_for_arch(cfg.arch, cfg.input_size)
        torch.manual_seed(cfg.seed)

        self.resume_state: dict[str, Any] | None = None
        if cfg.resume:
            self.resume_state = self._read_resume(cfg.resume)

        self.train_data = data_mod.load_data(cfg.data, "train", self.prep, cfg.train_fraction, cfg.seed)
        self.test_data = self._test_data(data_mod)
        num_classes = self.train_data.num_classes
        self.model: ADNModel = create_model(cfg.arch, num_classes=num_classes).to(self.device)
        self.init_report: dict[str, Any] | None = None
        if cfg.init_from:
            from adn_edge import checkpoint as ckpt_mod

            ck = ckpt_mod.read(cfg.init_from)
            self.init_report = init_from_plain(self.model, ck.state_dict, cfg.init_from)
        self.step_module = _ADNStep(self.model, cfg.mode, cfg.feature_kd, cfg.sandwich, cfg.seed)
        self.wrapped: nn.Module = self.step_module
        if self.dist.world > 1:
            # Plain mode never runs the twins, so DDP must be told to expect unused parameters.
            self.wrapped = wrap_ddp(self.step_module, self.device, find_unused_parameters=cfg.mode == "plain")
        self.optimizer: torch.optim.Optimizer = make_optimizer(self.model, cfg)
        self.loader, self.sampler = self._loader()
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
        self.ema = make_ema(self.model, ema_decay_per_update(cfg, self.dist.world)) if cfg.ema else None
        self.start_epoch = 0
        self.global_step = 0
        if self.resume_state is not None:
            self._restore(self.resume_state)

    # ----------------------------------------------------------------- setup helpers

    def _test_data(self, data_mod: Any) -> Any:
        try:
            return data_mod.load_data(self.cfg.data, "test", self.prep, classes=self.train_data.classes)
        except AdnError:
            if data_mod.builtin_name(self.cfg.data) is not None:
                raise
            return None  # an ImageFolder without a val/ split: per-epoch accuracy on training data instead

    def _loader(self) -> tuple[torch.utils.data.DataLoader, Any]:
        from torch.utils.data import DataLoader, DistributedSampler

        n = len(self.train_data)
        per_rank = n // self.dist.world
        if per_rank < self.cfg.batch_size:
            # drop_last would leave no batch at all; shrink the batch instead of failing.
            bs = max(2, per_rank)
        else:
            bs = self.cfg.batch_size
        if per_rank < 2:
            raise AdnError(f"The training data has {n} images: too few for {self.dist.world} process(es).",
                           "Add images (BatchNorm needs at least 2 per batch).")
        sampler = None
        if self.dist.world > 1:
            sampler = DistributedSampler(self.train_data, num_replicas=self.dist.world, rank=self.dist.rank,
                                         shuffle=True, seed=self.cfg.seed, drop_last=True)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        loader = DataLoader(self.train_data, batch_size=bs, shuffle=sampler is None, sampler=sampler,
                            drop_last=True, num_workers=self.cfg.num_workers, generator=gen,
                            pin_memory=self.device.type == "cuda", persistent_workers=self.cfg.num_workers > 0)
        return loader, sampler

    def _read_resume(self, path: str) -> dict[str, Any]:
        from adn_edge.checkpoint import _torch_load

        p = Path(path)
        if p.is_dir():
            p = p / "checkpoint.pth"
        if not p.is_file():
            raise AdnError(f"The checkpoint to resume, {str(p)!r}, does not exist.",
                           "Pass the checkpoint.pth that an earlier `adn-edge train` wrote (or its directory).")
        obj = _torch_load(p)
        if not isinstance(obj, dict) or not {"model", "optimizer", "epoch"} <= set(obj):
            raise AdnError(f"{str(p)!r} is not a training checkpoint (it needs 'model', 'optimizer' and 'epoch').",
                           "Resume from the checkpoint.pth of an `adn-edge train` run; use --init-from for weights.")
        raw_args = obj.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        old_arch = args.get("arch")
        if old_arch and old_arch != self.cfg.arch:
            raise AdnError(f"{str(p)!r} was trained as {old_arch}, but --arch {self.cfg.arch} was given.",
                           f"Resume with --arch {old_arch}.")
        return obj

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise AdnError(f"The checkpoint to resume does not fit {self.cfg.arch}: {str(exc).splitlines()[0]}.",
                           "Resume with the same --arch and --data (class count) as the original run.") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if "lr_scheduler" in state:
            self.scheduler.load_state_dict(state["lr_scheduler"])
        if self.ema is not None and "model_ema" in state:
            self.ema.load_state_dict(state["model_ema"])
        if "scaler" in state and self.cfg.amp:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.global_step = int(state.get("global_step", self.start_epoch * self.steps_per_epoch))

    # ----------------------------------------------------------------- logging

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        with open(self.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(to_json(record, indent=None) + "\n")

    # ----------------------------------------------------------------- training

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from adn_edge.train.data import augment

        cfg = self.cfg
        self.wrapped.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        # Shuffle order and augmentation depend only on (seed, epoch, rank): resume-exact.
        self.loader.generator.manual_seed(cfg.seed * 1000003 + epoch)
        aug_gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 104729 + self.dist.rank)
        shift = cfg.augment_shift if cfg.augment_shift is not None else self.prep.input_size // 8
        sums: dict[str, float] = {}
        count = 0
        it = self.iterate(self.loader, f"epoch {epoch + 1}/{cfg.epochs}") if (self.iterate and self.dist.main) \
            else self.loader
        for x, y in it:
            x = augment(x, aug_gen, shift, cfg.hflip).to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            self.step_module.step = self.global_step
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=cfg.amp):
                out = self.wrapped(x)
            losses = recipe_losses(cfg, out, y)
            if not torch.isfinite(losses["loss"]):
                raise RuntimeError(f"the training loss became {losses['loss'].item()} at epoch {epoch + 1}, step "
                                   f"{self.global_step}; lower --lr or use --clip-grad")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.global_step += 1
            if self.ema is not None:
                update_ema(self.ema, self.model, cfg, self.global_step, epoch)
            vals = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if self.global_step % cfg.log_every == 0:
                self._log({"event": "step", "epoch": epoch + 1, "step": self.global_step,
                           "lr": self.optimizer.param_groups[0]["lr"], **{k: round(v, 6) for k, v in vals.items()}})
        return {k: v / max(1, count) for k, v in sums.items()}

    def evaluate_ends(self, model: ADNModel) -> dict[str, float]:
        """Top-1 of the super- and base-net on the test split (training data if none)."""
        from adn_edge.train.evaluate import evaluate_model

        S = model.num_skippable_stages
        data = self.test_data if self.test_data is not None else self.train_data
        res = evaluate_model(model, data, [subnet.super_code(S), subnet.base_code(S)], device=self.device)
        return {"super_top1": res.subnets[subnet.super_code(S)].top1, "base_top1": res.subnets[subnet.base_code(S)].top1}

    def _eval_model(self) -> ADNModel:
        """The weights to evaluate and ship: the EMA's when EMA is on (official practice)."""
        if self.ema is not None:
            ema_module: ADNModel = self.ema.module
            return ema_module
        return self.model

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        from adn_edge.checkpoint import HEADER_KEY, header_for

        state: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "global_step": self.global_step,
            "args": self.cfg.args(),
            HEADER_KEY: header_for(self.model, input_size=self.prep.input_size),
        }
        if self.ema is not None:
            state["model_ema"] = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        if self.cfg.amp:
            state["scaler"] = self.scaler.state_dict()
        return state

    def _save_checkpoint(self, epoch: int) -> Path:
        path = self.out_dir / "checkpoint.pth"
        with atomic_path(path) as tmp:
            torch.save(self._checkpoint(epoch), tmp)
        return path

    def _finalise_plain(self) -> None:
        if self.cfg.mode == "plain":
            copy_main_norms_to_twins(self.model)
            if self.ema is not None:
                copy_main_norms_to_twins(self.ema.module)

    def fit(self) -> TrainResult:
        from adn_edge import checkpoint as ckpt_mod

        cfg = self.cfg
        result = TrainResult(self.out_dir, 0)
        if self.dist.main:
            self._log({"event": "resume" if self.resume_state is not None else "start", "epoch": self.start_epoch,
                       "world_size": self.dist.world, "device": str(self.device), "train_samples": len(self.train_data),
                       "test_samples": len(self.test_data) if self.test_data is not None else 0,
                       "steps_per_epoch": self.steps_per_epoch, "config": cfg.args(),
                       **({"init_from": self.init_report} if self.init_report else {})})
            if self.init_report:
                r = self.init_report
                self.echo(f"init from {r['source']}: {r['loaded']} tensors loaded, {r['twins_from_main']} twins "
                          f"copied from their main norms, {len(r['missing'])} left random"
                          + (f" (shape mismatch: {', '.join(r['shape_mismatch'][:3])})" if r["shape_mismatch"] else ""))
        if self.start_epoch >= cfg.epochs:
            self.echo(f"nothing to do: the checkpoint already completed {self.start_epoch} of {cfg.epochs} epochs "
                      "(raise --epochs to train longer)")
        last = cfg.epochs if cfg.stop_after_epochs is None else min(cfg.epochs,
                                                                      self.start_epoch + cfg.stop_after_epochs)
        for epoch in range(self.start_epoch, last):
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            record: dict[str, Any] = {"event": "epoch", "epoch": epoch + 1,
                                      **{f"train_{k}": round(v, 6) for k, v in losses.items()}}
            if self.dist.main:
                if cfg.mode == "plain":
                    # Twins are untrained in plain mode; evaluate the base-net as "skip with the main norms".
                    snapshot = plain_eval_copy(self.model)
                    record.update(self.evaluate_ends(snapshot))
                else:
                    record.update(self.evaluate_ends(self.model))
                if self.ema is not None:
                    ema_model: ADNModel = self.ema.module
                    if cfg.mode == "plain":
                        ema_model = plain_eval_copy(ema_model)
                    record.update({f"ema_{k}": v for k, v in self.evaluate_ends(ema_model).items()})
                record["seconds"] = round(time.perf_counter() - t0, 2)
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                self._save_checkpoint(epoch)
                self._log(record)
                self.echo(_epoch_line(record, cfg.epochs))
            result.history.append(record)
            result.epochs_run += 1
            self.dist.barrier()
        if last < cfg.epochs:
            self.echo(f"stopped after epoch {last} of {cfg.epochs}; continue with --resume "
                      f"{self.out_dir / 'checkpoint.pth'}")
            result.model = self._eval_model()
            return result
        self._finalise_plain()
        if self.dist.main:
            if cfg.mode == "plain":
                self._save_checkpoint(max(self.start_epoch, cfg.epochs) - 1)
            files = {"checkpoint": str(self.out_dir / "checkpoint.pth")}
            extra: dict[str, Any] = {"input_size": self.prep.input_size,
                                     "training": {"data": cfg.data, "epochs": cfg.epochs, "mode": cfg.mode,
                                                  "feature_kd": cfg.feature_kd, "seed": cfg.seed}}
            files["model"] = str(ckpt_mod.save(self.model, self.out_dir / "model.safetensors", **extra))
            files["official"] = str(ckpt_mod.save(self.model, self.out_dir / "model.pth", fmt="official"))
            if self.ema is not None:
                files["model_ema"] = str(ckpt_mod.save(self._eval_model(), self.out_dir / "model_ema.safetensors",
                                                       **extra, weights="model_ema"))
            result.files = files
            if cfg.final_eval:
                result.final = self._final_eval()
        result.model = self._eval_model()
        self.dist.barrier()
        return result

    def _final_eval(self) -> dict[str, Any]:
        from adn_edge.train.evaluate import evaluate_model, write_eval

        data = self.test_data if self.test_data is not None else self.train_data
        res = evaluate_model(self._eval_model(), data, "all", device=self.device, iterate=self.iterate)
        path = write_eval(self.out_dir, res, merge=False)
        self._log({"event": "final_eval", "file": str(path), "weights": "model_ema" if self.ema else "model",
                   "subnets": {c: s.record() for c, s in res.subnets.items()}})
        return res.record()

    def close(self) -> None:
        if self.step_module.tap is not None:
            self.step_module.tap.remove()
        self.dist.leave_group()


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r.get('train_loss', float('nan')):.4f}"]
    if "super_top1" in r:
        parts.append(f"super {r['super_top1']:.2f}%")
        parts.append(f"base {r['base_top1']:.2f}%")
    if "ema_super_top1" in r:
        parts.append(f"ema super {r['ema_super_top1']:.2f}% base {r['ema_base_top1']:.2f}%")
    parts.append(f"{r.get('seconds', 0):.1f}s")
    return "  ".join(parts)


def train(cfg: TrainConfig, iterate: Iterate | None = None, echo: Callable[[str], None] | None = None) -> TrainResult:
    """Run one training (see :class:`Trainer`); under torchrun every process calls this."""
    trainer = Trainer(cfg, iterate, echo)
    try:
        return trainer.fit()
    finally:
        trainer.close()
