"""Fixtures for the build tests (helpers live in ``_buildkit``, a unique module name:
several test folders have a ``conftest``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _buildkit import FakeToolchain, make_model_dir


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path)


@pytest.fixture
def fake() -> FakeToolchain:
    return FakeToolchain()
