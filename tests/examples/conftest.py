"""A real model directory for the examples' tests: the embedded model, exported once.

The embedded resnet_tiny (trained on the built-in digits, adn_edge/data/) exported as the
INT8 tests export it (tests/quantize/conftest.py, ``exported``): three sub-networks,
float32 graphs, no recalibration. Read-only for the tests; torch runs single-threaded
(tests/conftest.py explains why).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CODES = ["1111", "0101", "0000"]


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from adn_edge.data import load_embedded
    from adn_edge.export import export

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = load_embedded()
        d = tmp_path_factory.mktemp("embedded") / "resnet_tiny"
        export(model, d, CODES)
    finally:
        torch.set_num_threads(threads)
    return d
