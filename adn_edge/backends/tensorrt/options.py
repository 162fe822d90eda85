"""Build options: validated once, recorded in the manifest, compared on rebuilds.

Everything a user can get wrong about ``adn-edge build`` is caught here, before
TensorRT is even imported, so a typo costs a second and not a five-minute build. The
subset of options that changes the engine (:meth:`BuildOptions.record`) is stored with
each engine; a later ``build`` compares it to decide whether the engine is stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adn_edge.errors import AdnError

PRECISIONS = ("fp32", "fp16", "int8", "best")
"""``best`` is TensorRT's ``--best``: FP16 and INT8 kernels both allowed."""

MAX_BATCH_LIMIT = 4096
DEFAULT_MAX_BATCH = 8
"""Large enough for batched benchmarks, small enough that the one shared activation
buffer (sized for the largest batch) fits a Jetson's shared memory."""
DEFAULT_WORKSPACE_MB = 1024
MAX_OPT_LEVEL = 5
DEFAULT_CALIB_BATCH = 8


@dataclass(frozen=True)
class ProfileShapes:
    """The optimisation profile of the (only) input: min, opt and max shapes (NCHW for
    images; a segment's input is a feature map or token tensor of any rank)."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_record(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    opt_level: int = 3
    calib_batch: int = DEFAULT_CALIB_BATCH
    tf32: bool = False
    """Allow TF32 in an fp32 engine. TensorRT turns TF32 on by default, so on an Ampere
    GPU (every Orin) an "fp32" engine would quietly run its convolutions and matmuls
    with a 10-bit mantissa; fp32 means fp32 unless this says otherwise."""

    def record(self) -> dict[str, Any]:
        """What makes two builds of the same ONNX produce different engines.

        ``workspace_mb`` is included: a smaller pool can rule tactics out. The
        calibration batch only matters for calibrated INT8, so it is left out otherwise
        (changing it must not rebuild every FP16 engine); ``tf32`` only for fp32 (an fp32
        engine recorded without it was built with TensorRT's default, TF32 on, and is
        rebuilt).
        """
        rec: dict[str, Any] = {
            "precision": self.precision,
            "min_batch": self.min_batch,
            "opt_batch": self.opt_batch,
            "max_batch": self.max_batch,
            "workspace_mb": self.workspace_mb,
            "opt_level": self.opt_level,
        }
        if self.precision in ("int8", "best"):
            rec["calib_batch"] = self.calib_batch
        if self.precision == "fp32":
            rec["tf32"] = self.tf32
        return rec


def normalise_precision(value: str) -> str:
    p = str(value).strip().lower()
    if p not in PRECISIONS:
        raise AdnError(
            f"{value!r} is not a build precision; adn-edge builds {', '.join(PRECISIONS)}.",
            "Use e.g. --precision fp16 (the usual choice on a Jetson) or --precision fp32.",
        )
    return p


def _positive_int(value: Any, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdnError(f"{flag} must be a whole number, not {value!r}.")
    if value < 1:
        raise AdnError(f"{flag} must be at least 1 (got {value}).")
    return value


def static_batch(input_spec: Mapping[str, Any]) -> int | None:
    """The batch size baked into the exported graph, or None when N is dynamic."""
    shape = input_spec.get("shape")
    if not isinstance(shape, Sequence) or len(shape) != 4:
        raise AdnError(f"The manifest's input shape {shape!r} is not NCHW with 4 dimensions; it is damaged.",
                       "Re-export the model directory.")
    n = shape[0]
    if n is None or (isinstance(n, int) and n < 1):  # -1/0 also mean dynamic in some writers
        return None
    if not isinstance(n, int):
        raise AdnError(f"The manifest's input batch dimension {n!r} is not a number or null.",
                       "Re-export the model directory.")
    return n


def resolve_batches(
    static_n: int | None,
    min_batch: int | None,
    opt_batch: int | None,
    max_batch: int | None,
) -> tuple[int, int, int]:
    """Fill in unset batch sizes and check ``1 <= min <= opt <= max``.

    A graph exported with a static batch N admits only N; asking for anything else is
    an error rather than a silent clamp, because the user expects to run that batch.
    """
    given = {"--min-batch": min_batch, "--opt-batch": opt_batch, "--max-batch": max_batch}
    for flag, v in given.items():
        if v is not None:
            _positive_int(v, flag)
    if static_n is not None:
        wrong = {f: v for f, v in given.items() if v is not None and v != static_n}
        if wrong:
            flags = ", ".join(f"{f} {v}" for f, v in wrong.items())
            raise AdnError(
                f"The ONNX graphs were exported with a static batch of {static_n}, so the engines can only run "
                f"batch {static_n} ({flags} asked for another).",
                "Re-export with a dynamic batch (the default of `adn-edge export`), or leave the batch options out.",
            )
        return static_n, static_n, static_n
    lo = min_batch if min_batch is not None else 1
    opt = opt_batch if opt_batch is not None else lo
    hi = max_batch if max_batch is not None else max(DEFAULT_MAX_BATCH, opt)
    if not lo <= opt <= hi:
        raise AdnError(
            f"Batch sizes must satisfy min <= opt <= max, but got min {lo}, opt {opt}, max {hi}.",
            "Pass e.g. --min-batch 1 --opt-batch 1 --max-batch 8.",
        )
    if hi > MAX_BATCH_LIMIT:
        raise AdnError(f"--max-batch {hi} is larger than adn-edge allows ({MAX_BATCH_LIMIT}).",
                       "Edge engines rarely need more than 64; pick a smaller --max-batch.")
    return lo, opt, hi


def make_options(
    input_spec: Mapping[str, Any],
    precision: str = "fp16",
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mb: int | None = DEFAULT_WORKSPACE_MB,
    opt_level: int = 3,
    calib_batch: int = DEFAULT_CALIB_BATCH,
    tf32: bool = False,
) -> BuildOptions:
    """Validate user-facing options against the model directory's input spec."""
    prec = normalise_precision(precision)
    static_n = static_batch(input_spec)
    lo, opt, hi = resolve_batches(static_n, min_batch, opt_batch, max_batch)
    ws = _positive_int(workspace_mb if workspace_mb is not None else DEFAULT_WORKSPACE_MB, "--workspace-mb")
    if isinstance(opt_level, bool) or not isinstance(opt_level, int) or not 0 <= opt_level <= MAX_OPT_LEVEL:
        raise AdnError(
            f"--opt-level must be a whole number from 0 to {MAX_OPT_LEVEL} (got {opt_level!r}).",
            "3 is TensorRT's default; 5 searches longest for the fastest kernels.",
        )
    cb = _positive_int(calib_batch, "calibration batch size")
    if static_n is not None:
        cb = static_n  # a static graph calibrates with its own batch or not at all
    return BuildOptions(prec, lo, opt, hi, ws, opt_level, cb, bool(tf32))


def sample_dims(shape: Any, what: str = "the input", image: bool = False) -> tuple[int, ...]:
    """The per-sample dimensions of a recorded batched shape: fixed positive sizes after
    a batch dimension that alone may be dynamic. ``image``: the model's NCHW input;
    otherwise any rank (a segment's feature map, or a ViT's tokens)."""
    if not isinstance(shape, Sequence) or (len(shape) != 4 if image else len(shape) < 2):
        kind = "NCHW with 4 dimensions" if image else "a batched shape"
        raise AdnError(f"The manifest's shape {shape!r} of {what} is not {kind}; it is damaged.",
                       "Re-export the model directory.")
    rest = shape[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in rest):
        raise AdnError(
            f"The non-batch dimensions {list(rest)!r} of {what} are not fixed positive sizes; adn-edge builds "
            "engines for a fixed image size with a dynamic batch only.",
            "Re-export with a fixed --input-size.",
        )
    return tuple(int(d) for d in rest)


def profile_shapes(input_spec: Mapping[str, Any], options: BuildOptions, image: bool = True) -> ProfileShapes:
    """Min/opt/max input shapes for the optimisation profile (only N varies).

    ``image``: the model's own input, NCHW. Segment graphs (``image=False``) take the
    previous segment's output, whose rank depends on the architecture (NCHW for a
    CNN, tokens for a ViT); only its batch dimension may be dynamic.
    """
    name = str(input_spec.get("name") or "input")
    dims = sample_dims(input_spec.get("shape"), f"input {name!r}", image)
    return ProfileShapes(
        input_name=name,
        min=(options.min_batch, *dims),
        opt=(options.opt_batch, *dims),
        max=(options.max_batch, *dims),
    )
