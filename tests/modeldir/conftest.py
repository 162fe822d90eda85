"""The real model directory the manifest tests damage, exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.modeldir._mdir import link_copy, make_base


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written by the real exporter, with engine and quantization records (see _mdir)."""
    return make_base(tmp_path_factory.mktemp("manifest-base"))


@pytest.fixture()
def mdir(base_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the base directory at ``tmp_path/model`` (hard links; the
    manifest is a real copy), with ``tmp_path/outside/`` empty beside it."""
    (tmp_path / "outside").mkdir()
    return link_copy(base_dir, tmp_path / "model")
