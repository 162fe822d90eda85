"""Training Adaptive Depth Networks with the official self-distillation recipe.

Per batch (ADN_FORMAT.md section 9), both passes in train mode on the same images:

1. super-net (no stage skipped): ``alpha * CE(logits, y)`` with label smoothing;
2. base-net (every stage skipped): the super-net's top-k logits (indices from the
   super-net) are the detached target of a temperature-scaled KL divergence
   (``batchmean``, times ``T^2``), plus with ``feature_kd`` the same KL between the
   globally pooled outputs of stages 2..S (the official ``--fpn`` on layer2-4);
   weighted ``1 - alpha``;
3. one optimizer step on the summed gradients.

The official script calls ``backward`` once per pass; here both passes run inside one
module call (:class:`_ADNStep`) and the summed loss is back-propagated once. The
gradients are identical (they add), BN statistics are updated in the same order
(super-net, then base-net), one GradScaler scales both terms alike; but under
DistributedDataParallel a single forward/backward per step is what DDP supports, and
every parameter receives a gradient in it (main norms and skippable blocks from the
super-net, twins from the base-net), so no ``find_unused_parameters`` is needed.

``mode="plain"`` is ordinary training (super-net cross-entropy, weight 1, no base-net
pass): the baseline of the benchmark's "train normally, then skip" variant. Its
``_skip`` twins are never trained, so after training they are set to copies of their
main norms, which is what skipping stages of a normally trained network means.

Outputs in ``out_dir``: ``checkpoint.pth`` (the official training-checkpoint layout:
``model``, ``model_ema``, ``optimizer``, ``lr_scheduler``, ``epoch``, ``args``, plus
``scaler`` with AMP; read by ``adn_edge.checkpoint.read`` with ``weights_only=True``;
``--resume`` continues from it), ``model.safetensors`` (our format), ``model.pth``
(official plain weights), ``model_ema.safetensors`` with EMA, ``log.jsonl`` (losses
every ``log_every`` steps, per-epoch super/base accuracy) and, with ``final_eval``,
``eval.json`` for every sub-network.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.fileio import atomic_path, ensure_writable_dir
from adn_edge.models.base import TWIN_SUFFIX, ADNModel

Iterate = Callable[[Sequence[Any], str], Iterable[Any]]
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
MODES = ("adn", "plain")


@dataclass
class TrainConfig:
    """Every option of ``adn-edge train``; stored in checkpoints under ``args``."""

    arch: str = "resnet_tiny"
    data: str = "builtin"
    out_dir: str = "runs/adn"
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None
    """Default: 0.1 x batch/128 for SGD, 1e-3 x batch/256 for AdamW."""
    momentum: float = 0.9
    weight_decay: float | None = None
    """Default: 5e-4 (SGD), 0.05 (AdamW); never applied to norms and biases."""
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    """Step schedule: fractions of the run at which the LR is multiplied by ``gamma``."""
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start: float = 0.01
    label_smoothing: float = 0.0
    alpha: float = 0.5
    temperature: float = 1.0
    topk: int = 500
    feature_kd: bool = False
    mode: str = "adn"
    amp: bool = False
    ema: bool = False
    ema_decay: float = 0.99998
    ema_steps: int = 32
    clip_grad: float | None = None
    seed: int = 0
    train_fraction: float = 1.0
    augment_shift: int | None = None
    """Random translation in pixels (default input_size // 8); 0 disables."""
    hflip: bool = False
    num_workers: int = 0
    device: str = "auto"
    input_size: int | None = None
    log_every: int = 10
    final_eval: bool = True
    init_from: str | None = None
    resume: str | None = None
    stop_after_epochs: int | None = None
    """Stop after this many epochs of *this* invocation (the schedule still spans ``epochs``):
    time-boxed jobs that ``resume`` later."""

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.1 * self.batch_size / 128 if self.optimizer == "sgd" else 1e-3 * self.batch_size / 256

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}."),
            (self.batch_size >= 2, f"--batch-size must be at least 2 (BatchNorm), not {self.batch_size}."),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not "
                                           f"{self.optimizer!r}."),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}."),
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, not {self.mode!r}."),
            (0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], not {self.alpha}."),
            (self.temperature > 0, f"--temperature must be positive, not {self.temperature}."),
            (self.topk >= 1, f"--topk must be at least 1, not {self.topk}."),
            (0.0 <= self.label_smoothing < 1.0, f"--label-smoothing must be in [0, 1), not {self.label_smoothing}."),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, not {self.warmup_epochs}."),
            (0.0 < self.train_fraction <= 1.0, f"--train-fraction must be in (0, 1], not {self.train_fraction}."),
            (self.ema_steps >= 1, f"--ema-steps must be at least 1, not {self.ema_steps}."),
            (0.0 <= self.ema_decay < 1.0, f"--ema-decay must be in [0, 1), not {self.ema_decay}."),
            (self.log_every >= 1, f"--log-every must be at least 1, not {self.log_every}."),
        ]
        for ok, msg in checks:
            if not ok:
                raise AdnError(msg)
        if self.lr is not None and self.lr <= 0:
            raise AdnError(f"--lr must be positive, not {self.lr}.")
        if self.mode == "plain" and self.feature_kd:
            raise AdnError("--feature-kd distils the base-net from the super-net; plain training has no base-net "
                           "pass.", "Drop --feature-kd or train in ADN mode.")
        if self.resume and self.init_from:
            raise AdnError("--resume and --init-from exclude each other.",
                           "--resume continues a run (weights, optimizer, epoch); --init-from starts a new run "
                           "from existing weights.")

    def args(self) -> dict[str, Any]:
        """JSON-able and ``weights_only``-loadable (plain types only)."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in args.items() if k in names}
        if "milestones" in kw:
            kw["milestones"] = tuple(kw["milestones"])
        return cls(**kw)


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    model: ADNModel | None = None


# --------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun describes (RANK/WORLD_SIZE in the environment)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    mine = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        mine = True
    return Dist(rank, world, local, mine)


def _resolve_device(cfg: TrainConfig, dist: Dist | None = None) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AdnError(f"--device {cfg.device} was asked for but no CUDA GPU is available.",
                           "Use --device cpu (or auto).")
        if dist is not None and dist.world > 1 and want == "cuda":
            return torch.device("cuda", dist.local_rank)
    elif want != "cpu":
        raise AdnError(f"Unknown --device {cfg.device!r}.", "Use auto, cpu, cuda or cuda:N.")
    return torch.device(want)


# --------------------------------------------------------------------------- losses

def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, topk: int) -> torch.Tensor:
    """The official sub-path loss: KL over the teacher's top-k classes, ``batchmean``, x T^2.

    ``teacher`` must already be detached: the super-net is the target, never pulled
    towards the base-net.
    """
    k = min(topk, teacher.shape[1])
    if k < teacher.shape[1]:
        idx = teacher.topk(k, dim=1).indices
        teacher = teacher.gather(1, idx)
        student = student.gather(1, idx)
    t = temperature
    target = F.softmax(teacher.float() / t, dim=1)
    log_p = F.log_softmax(student.float() / t, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean") * (t * t)


def feature_kd_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                    temperature: float) -> torch.Tensor:
    """Sum over stages of the T-scaled KL between globally pooled channel activations."""
    total = student[0].new_zeros((), dtype=torch.float32)
    t = temperature
    for s, te in zip(student, teacher, strict=True):
        ps = s.float().mean((2, 3))
        pt = te.detach().float().mean((2, 3))
        total = total + F.kl_div(F.log_softmax(ps / t, dim=1), F.softmax(pt / t, dim=1),
                                 reduction="batchmean") * (t * t)
    return total


class StageTap:
    """Records each stage's output during a forward (for feature distillation).

    ResNet-ADN calls its blocks one by one rather than the ``layerK`` containers, so
    the hook sits on every block and the last block to run in a stage leaves the
    stage's output (the last mandatory block when the stage is skipped).
    """

    def __init__(self, model: ADNModel, first_stage: int = 1) -> None:
        stages = getattr(model, "stages", None)
        if stages is None:
            raise AdnError(f"--feature-kd is implemented for ResNet-family models (as the official --fpn option), "
                           f"not for {model.arch}.", "Train without --feature-kd.")
        self.first = first_stage
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = []
        for k, stage in enumerate(stages):
            if k < first_stage:
                continue
            for blk in stage:
                self.handles.append(blk.register_forward_hook(self._hook(k)))

    def _hook(self, k: int) -> Callable[..., None]:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            self.outputs[k] = out

        return hook

    def take(self) -> list[torch.Tensor]:
        out = [self.outputs[k] for k in sorted(self.outputs)]
        self.outputs = {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _ADNStep(nn.Module):
    """Both training passes of one batch in one module call (see the module docstring)."""

    def __init__(self, model: ADNModel, mode: str, feature_kd: bool) -> None:
        super().__init__()
        self.model = model
        self.mode = mode
        self.tap = StageTap(model) if feature_kd else None

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        S = self.model.num_skippable_stages
        out: dict[str, Any] = {"super": self.model(x, skip=[False] * S)}
        if self.tap is not None:
            out["super_feats"] = self.tap.take()
        if self.mode == "adn":
            out["base"] = self.model(x, skip=[True] * S)
            if self.tap is not None:
                out["base_feats"] = self.tap.take()
        return out


# --------------------------------------------------------------------------- weights

def copy_main_norms_to_twins(model: ADNModel) -> int:
    """Set every ``_skip`` twin to a copy of its main norm; returns how many twins."""
    mods = dict(model.named_modules())
    n = 0
    with torch.no_grad():
        for name, mod in mods.items():
            leaf = name.rsplit(".", 1)[-1]
            if not leaf.endswith(TWIN_SUFFIX):
                continue
            main = mods.get(name[: -len(TWIN_SUFFIX)])
            if main is None:
                continue
            mod.load_state_dict(main.state_dict())
            n += 1
    return n


def init_from_plain(model: ADNModel, state_dict: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Load a plain (non-ADN) checkpoint of the same backbone where keys and shapes allow.

    Twins absent from the file start as copies of their main norms *from the file*, so
    the base-net starts as "the pretrained network with stages dropped". Keys of the
    wrong shape (typically a head with another number of classes) stay random.
    """
    own = model.state_dict()
    loaded: list[str] = []
    twins: list[str] = []
    shape_mismatch: list[str] = []
    new: dict[str, torch.Tensor] = {}
    for key, t in own.items():
        src_key = key
        if key not in state_dict:
            parts = key.split(".")
            if len(parts) >= 2 and parts[-2].endswith(TWIN_SUFFIX):
                parts[-2] = parts[-2][: -len(TWIN_SUFFIX)]
                src_key = ".".join(parts)
        if src_key not in state_dict:
            continue
        v = state_dict[src_key]
        if tuple(v.shape) != tuple(t.shape):
            shape_mismatch.append(key)
            continue
        new[key] = v.to(t.dtype)
        (twins if src_key != key else loaded).append(key)
    unexpected = [k for k in state_dict if k not in own and not k.endswith("num_batches_tracked")]
    matched_weights = [k for k in loaded if not k.endswith("num_batches_tracked")]
    if not matched_weights:
        raise AdnError(f"No weight of {source!r} fits {model.arch}: none of its keys match the model's "
                       f"(first keys in the file: {', '.join(list(state_dict)[:3])}).",
                       f"--init-from needs a checkpoint of the same backbone as {model.arch} "
                       "(e.g. a torchvision ResNet-50 for resnet50).")
    model.load_state_dict(new, strict=False)
    missing = [k for k in own if k not in new and not k.endswith("num_batches_tracked")]
    return {"source": source, "loaded": len(loaded), "twins_from_main": len(twins),
            "shape_mismatch": shape_mismatch, "missing": missing, "unexpected": unexpected[:20],
            "unexpected_count": len(unexpected)}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    marks = sorted(int(round(m * total)) for m in cfg.milestones)

    def f(step: int) -> float:
        if step < warm:
            return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / max(1, warm)
        if cfg.schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return cfg.gamma ** sum(step >= m for m in marks)

    return f


def _ema_decay(cfg: TrainConfig, world: int) -> float:
    """The official adjustment: the decay per EMA update, scaled by the images between updates."""
    adjust = world * cfg.batch_size * cfg.ema_steps / cfg.epochs
    return 1.0 - min(1.0, (1.0 - cfg.ema_decay) * adjust)


def _make_ema(model: ADNModel, decay: float) -> torch.optim.swa_utils.AveragedModel:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# --------------------------------------------------------------------------- the trainer

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
            self._leave_group()
            raise

    def _build(self, cfg: TrainConfig, echo: Callable[[str], None] | None) -> None:
        from adn_edge.models import create_model, get_spec
        from adn_edge.train import data as data_mod

        self.device = _resolve_device(cfg, self.dist)
        self.echo = echo if (echo and self.dist.main) else (lambda _msg: None)
        if cfg.amp and self.device.type != "cuda":
            raise AdnError("--amp (mixed precision) needs a CUDA GPU; this run is on the CPU.",
                           "Drop --amp, or run on a machine with a GPU.")
        self.out_dir = ensure_writable_dir(cfg.out_dir) if self.dist.main else Path(cfg.out_dir)
        spec = get_spec(cfg.arch)
        self.spec = spec
        self.prep = data_mod.Preprocess.for_arch(cfg.arch, cfg.input_size)
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
        self.step_module = _ADNStep(self.model, cfg.mode, cfg.feature_kd)
        self.wrapped: nn.Module = self.step_module
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Plain mode never runs the twins, so DDP must be told to expect unused parameters.
            self.wrapped = DDP(self.step_module, device_ids=ids, find_unused_parameters=cfg.mode == "plain")
        lr, wd = cfg.resolved_lr(), cfg.resolved_weight_decay()
        groups = _param_groups(self.model, wd)
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                                                                    nesterov=cfg.momentum > 0)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr)
        self.loader, self.sampler = self._loader()
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg, self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
        self.ema = _make_ema(self.model, _ema_decay(cfg, self.dist.world)) if cfg.ema else None
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
            f.write(json.dumps(record) + "\n")

    # ----------------------------------------------------------------- training

    def _losses(self, out: dict[str, Any], y: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        ce = F.cross_entropy(out["super"].float(), y, label_smoothing=cfg.label_smoothing)
        if cfg.mode == "plain":
            return {"loss": ce, "super_ce": ce}
        kd = kd_loss(out["base"], out["super"].detach(), cfg.temperature, cfg.topk)
        losses = {"super_ce": ce, "base_kd": kd}
        total_kd = kd
        if cfg.feature_kd:
            fk = feature_kd_loss(out["base_feats"], out["super_feats"], cfg.temperature)
            losses["feature_kd"] = fk
            total_kd = kd + fk
        losses["loss"] = cfg.alpha * ce + (1.0 - cfg.alpha) * total_kd
        return losses

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
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=cfg.amp):
                out = self.wrapped(x)
            losses = self._losses(out, y)
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
            if self.ema is not None and self.global_step % cfg.ema_steps == 0:
                self.ema.update_parameters(self.model)
                if epoch < cfg.warmup_epochs:
                    self.ema.n_averaged.fill_(0)  # official: during warm-up the EMA follows the weights
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
                    snapshot = _plain_eval_copy(self.model)
                    record.update(self.evaluate_ends(snapshot))
                else:
                    record.update(self.evaluate_ends(self.model))
                if self.ema is not None:
                    ema_model: ADNModel = self.ema.module
                    if cfg.mode == "plain":
                        ema_model = _plain_eval_copy(ema_model)
                    record.update({f"ema_{k}": v for k, v in self.evaluate_ends(ema_model).items()})
                record["seconds"] = round(time.perf_counter() - t0, 2)
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                self._save_checkpoint(epoch)
                self._log(record)
                self.echo(_epoch_line(record, cfg.epochs))
            result.history.append(record)
            result.epochs_run += 1
            self._barrier()
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
        self._barrier()
        return result

    def _final_eval(self) -> dict[str, Any]:
        from adn_edge.train.evaluate import evaluate_model, write_eval

        data = self.test_data if self.test_data is not None else self.train_data
        res = evaluate_model(self._eval_model(), data, "all", device=self.device, iterate=self.iterate)
        path = write_eval(self.out_dir, res, merge=False)
        self._log({"event": "final_eval", "file": str(path), "weights": "model_ema" if self.ema else "model",
                   "subnets": {c: s.record() for c, s in res.subnets.items()}})
        return res.record()

    def _barrier(self) -> None:
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.step_module.tap is not None:
            self.step_module.tap.remove()
        self._leave_group()

    def _leave_group(self) -> None:
        if self.dist.initialised_here:
            self.dist.initialised_here = False
            import torch.distributed as dist

            dist.destroy_process_group()


def _plain_eval_copy(model: ADNModel) -> ADNModel:
    import copy

    m = copy.deepcopy(model)
    copy_main_norms_to_twins(m)
    return m


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
