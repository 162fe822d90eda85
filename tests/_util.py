"""Shared test helpers: official-format random weights, fixture paths, references."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from adn_edge.models.random_weights import random_state_dict  # noqa: F401 (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
# Copies of ../shared/fixtures (the design's data), so a clone tests on its own.
FIXTURES = REPO / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official"


@lru_cache(maxsize=None)
def keys_fixture(arch: str) -> dict:
    return json.loads((OFFICIAL / f"{arch}.keys.json").read_text())


@lru_cache(maxsize=None)
def subnets_fixture() -> dict:
    return json.loads((OFFICIAL / "subnets.json").read_text())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, the relative error used throughout the tests."""
    a64, b64 = a.detach().double(), b.detach().double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``adn-edge ARGS`` in-process; return (exit code, stdout, stderr)."""
    import pytest

    from adn_edge.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 1
    return code, out.out, out.err
