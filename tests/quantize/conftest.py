"""One exported model directory for the INT8 tests: the embedded resnet_tiny (trained on
Fashion-MNIST), three sub-networks, quantised once per session, on its own built-in data
(``builtin:fashion``, tests/quantize/_helpers.py DATA).

Calibration uses 128 of its training images (fewer than the recommended 300, which the
tests also check is warned about) to keep the suite fast on two shared cores; the
accuracy checks run on the whole test split (2,000 images).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.quantize._helpers import CODES, DATA, QUANTIZED, SAMPLES, SEG_SAMPLES


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FP32 graphs only (never modified: tests that write copy it first)."""
    from adn_edge.data import load_embedded
    from adn_edge.export import export

    torch.set_num_threads(1)
    model, _ = load_embedded()
    d = tmp_path_factory.mktemp("fp32") / "resnet_tiny"
    export(model, d, CODES)
    return d


@pytest.fixture(scope="session")
def quantized(tmp_path_factory: pytest.TempPathFactory, exported: Path):
    """(directory, report) after quantising QUANTIZED on the model's built-in data (read-only for tests)."""
    from adn_edge.quantize import QuantizeOptions, quantize_directory

    d = tmp_path_factory.mktemp("int8") / "resnet_tiny"
    shutil.copytree(exported, d)
    report = quantize_directory(d, DATA, QUANTIZED, QuantizeOptions(samples=SAMPLES))
    return d, report


@pytest.fixture()
def workdir(tmp_path: Path, quantized) -> Path:
    """A private copy of the quantised directory, for tests that change it."""
    d = tmp_path / "resnet_tiny"
    shutil.copytree(quantized[0], d)
    return d


@pytest.fixture()
def fp32dir(tmp_path: Path, exported: Path) -> Path:
    d = tmp_path / "fp32"
    shutil.copytree(exported, d)
    return d


@pytest.fixture(scope="session")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's 8 float32 segment graphs only, as `adn-edge export CHECKPOINT
    --segments` writes them (plain segments, no recalibration); never modified."""
    from adn_edge.data import load_embedded
    from adn_edge.export.segments import export_segments

    torch.set_num_threads(1)
    model, ckpt = load_embedded()
    d = tmp_path_factory.mktemp("segfp32") / "resnet_tiny"
    export_segments(model, d, ckpt.source_record())
    return d


@pytest.fixture(scope="session")
def seg_quantized(tmp_path_factory: pytest.TempPathFactory, segmented: Path):
    """(directory, report) after `quantize --segments` on the model's built-in data (read-only for tests)."""
    from adn_edge.quantize import QuantizeOptions, quantize_segments

    d = tmp_path_factory.mktemp("segint8") / "resnet_tiny"
    shutil.copytree(segmented, d)
    report = quantize_segments(d, DATA, QuantizeOptions(samples=SEG_SAMPLES))
    return d, report


@pytest.fixture()
def seg_workdir(tmp_path: Path, seg_quantized) -> Path:
    """A private copy of the INT8-segmented directory, for tests that change it."""
    d = tmp_path / "resnet_tiny"
    shutil.copytree(seg_quantized[0], d)
    return d


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test in this folder runs with one torch thread (see tests/conftest.py)."""
