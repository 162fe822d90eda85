"""One small model directory for every runtime test, exported once per session.

``resnet_tiny`` (32x32, 16 sub-networks) with random well-conditioned weights, all
16 monolithic graphs plus the 8 segment graphs, and the reference logits of the
ADN model's own forward for a pool of inputs. torch runs single-threaded here:
on a 2-core machine shared with other jobs, OpenMP's second thread makes small
convolutions ~50x slower, and the tests' own threads provide the parallelism.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adn_edge import subnet
from adn_edge.export import export
from adn_edge.export.segments import export_segments
from adn_edge.models import create_model
from tests._util import random_state_dict
from tests.runtime._helpers import ARCH, CODES

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model():
    model = create_model(ARCH)
    model.load_state_dict(random_state_dict(model, seed=7), strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    d = tmp_path_factory.mktemp("models") / ARCH
    export(tiny_model, d, "all")
    export_segments(tiny_model, d)
    return d


@pytest.fixture(scope="session")
def inputs() -> list[np.ndarray]:
    """Batches of different sizes: dynamic batch is part of what is checked."""
    rng = np.random.default_rng(11)
    return [rng.standard_normal((n, 3, 32, 32), dtype=np.float32) for n in (1, 2, 3, 1, 4, 2)]


@pytest.fixture(scope="session")
def references(tiny_model, inputs) -> dict[str, list[np.ndarray]]:
    out = {}
    with torch.no_grad():
        for code in CODES:
            out[code] = [tiny_model(torch.from_numpy(x), skip=subnet.to_skip(code)).numpy() for x in inputs]
    return out


@pytest.fixture()
def dir_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy to damage."""
    d = tmp_path / ARCH
    shutil.copytree(model_dir, d)
    return d
