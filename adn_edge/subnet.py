"""Sub-network codes (docs/checkpoints.md, "Sub-network codes").

A model with S skippable stages has 2^S sub-networks. Internally a sub-network is
always its *canonical code*: S characters of ``0``/``1``, first character = stage
nearest the input, ``1`` = the stage's skippable blocks run. Users may also write
``super``, ``base``, the official ``--skip-cfg`` spelling (``T`` = skipped) or ``all``;
everything is normalised here, once, so that no other module sees another spelling.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from adn_edge.errors import AdnError

_TF = {"t": "0", "f": "1"}


def all_codes(num_stages: int) -> list[str]:
    """Every canonical code, super-net first, in descending binary order."""
    return [format(i, f"0{num_stages}b") for i in range(2**num_stages - 1, -1, -1)]


def super_code(num_stages: int) -> str:
    return "1" * num_stages


def base_code(num_stages: int) -> str:
    return "0" * num_stages


def examples(num_stages: int) -> list[str]:
    """Three valid spellings, for error messages."""
    mixed = "".join("10"[i % 2] for i in range(num_stages))
    return [mixed, "T" + "F" * (num_stages - 1), "base"]


def parse_code(spec: str, num_stages: int, arch: str | None = None) -> str:
    """Normalise one sub-network spelling to its canonical code.

    ``all`` is not a single code: use :func:`expand`.
    """
    text = str(spec).strip()
    low = text.lower()
    if low == "super":
        return super_code(num_stages)
    if low == "base":
        return base_code(num_stages)
    if len(text) == num_stages and set(text) <= {"0", "1"}:
        return text
    if len(text) == num_stages and set(low) <= {"t", "f"}:
        return "".join(_TF[c] for c in low)
    raise bad_code(text, num_stages, arch)


def bad_code(text: str, num_stages: int, arch: str | None) -> AdnError:
    who = f"{arch} has" if arch else "this model has"
    ex = ", ".join(repr(e) for e in examples(num_stages))
    return AdnError(
        f"{text!r} is not a sub-network code: {who} {num_stages} skippable stages, so a "
        f"code is {num_stages} characters of 0/1 (1 = the stage's skippable blocks run), "
        f"the official --skip-cfg form of {num_stages} letters T/F (T = skipped), or one "
        f"of 'super', 'base', 'all'.",
        f"Valid examples: {ex}.",
    )


def expand(
    specs: str | Iterable[str] | None,
    num_stages: int,
    arch: str | None = None,
    cost: Callable[[str], float] | None = None,
    available: Collection[str] | None = None,
) -> list[str]:
    """Normalise a list of spellings (``all`` included) to unique canonical codes.

    ``all`` yields every sub-network (only those in ``available``, when given),
    super-net first, then by descending ``cost`` (GMACs, when given) so that long runs
    show the expensive networks first. Explicit codes keep the user's order;
    duplicates are dropped.
    """
    if specs is None:
        specs = ["all"]
    elif isinstance(specs, str):
        specs = [specs]
    out: list[str] = []
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "all":
                codes = [c for c in ordered_all(num_stages, cost) if available is None or c in available]
            else:
                codes = [parse_code(part, num_stages, arch)]
            out.extend(c for c in codes if c not in out)
    if not out:
        raise AdnError("No sub-network was given.", f"Use e.g. --subnet {examples(num_stages)[0]} or --subnet all.")
    return out


def ordered_all(num_stages: int, cost: Callable[[str], float] | None = None) -> list[str]:
    codes = all_codes(num_stages)
    if cost is None:
        return codes
    sup = super_code(num_stages)
    rest = sorted((c for c in codes if c != sup), key=lambda c: (-cost(c), c))
    return [sup, *rest]


def to_skip(code: str) -> list[bool]:
    """Canonical code -> the official ``skip`` list (True = stage runs reduced)."""
    return [c == "0" for c in code]


def from_skip(skip: Sequence[bool]) -> str:
    return "".join("0" if s else "1" for s in skip)


def to_skip_cfg(code: str) -> str:
    """Canonical code -> the official upper-case ``--skip-cfg`` letters (T = skipped)."""
    return "".join("T" if c == "0" else "F" for c in code)
