"""The model every export test exports: ``resnet_tiny`` with random well-conditioned
weights whose ``_skip`` twins differ from their main norms (a folding or twin
mistake then fails parity by orders of magnitude)."""

from __future__ import annotations

import pytest

from adn_edge.models import create_model
from adn_edge.models.random_weights import randomize


@pytest.fixture(scope="module")
def model():
    return randomize(create_model("resnet_tiny"), seed=7, input_size=32)
