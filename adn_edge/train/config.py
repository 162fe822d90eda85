"""The options of one training run, apart from the code that runs it.

``TrainConfig`` is stored in every ``checkpoint.pth`` under ``args`` and read back by
``--resume``, and the optimizer, EMA and device helpers size themselves from it; they
import it from here so that none of them depends on the training loop in
:mod:`~adn_edge.train.trainer`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from adn_edge.errors import AdnError

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
    sandwich: int = 0
    """Mixed sub-networks sampled per step beyond the paper's two passes (0: the paper's
    recipe). Each is distilled from the detached super-net like the base-net; see
    :mod:`~adn_edge.train.adn_step`."""
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
            (self.sandwich >= 0, f"--sandwich must be 0 or more, not {self.sandwich}."),
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
        if self.mode == "plain" and self.sandwich:
            raise AdnError("--sandwich distils sampled mixed sub-networks from the super-net; plain training "
                           "trains the super-net only.", "Drop --sandwich or train in ADN mode.")
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
