"""`adn-edge build --segments` refuses corrected (recalibrated) segment graphs.

They take per-sub-network BatchNorm corrections as extra inputs, which the segmented
TensorRT chain does not feed; the refusal names the alternatives and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adn_edge.backends.tensorrt.build import build_directory
from adn_edge.errors import AdnError
from tests.runtime import _fake_tensorrt as fake

ARCH = "resnet_tiny"


@pytest.fixture(scope="module")
def corrected_segments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adn_edge.export import ExportOptions
    from adn_edge.export.segments import export_segments
    from adn_edge.models import create_model
    from tests._util import random_state_dict

    torch.set_num_threads(1)
    model = create_model(ARCH)
    model.load_state_dict(random_state_dict(model, seed=7), strict=True)
    d = tmp_path_factory.mktemp("corrseg") / ARCH
    g = torch.Generator().manual_seed(0)
    export_segments(model.eval(), d, options=ExportOptions(
        recalibration=[torch.randn(8, 3, 32, 32, generator=g)], recalibration_source="builtin"))
    return d


def test_build_segments_refuses_corrected_segments(corrected_segments: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.install(monkeypatch, "10.3")
    before = sorted(p.name for p in corrected_segments.iterdir()), (corrected_segments / "manifest.json").read_bytes()
    with pytest.raises(AdnError) as e:
        build_directory(corrected_segments, precision="fp16", max_batch=4, segments=True)
    assert e.value.exit_code == 2
    assert "recalibration (data: 'builtin')" in e.value.message and "not fed" in e.value.message
    assert "without --segments" in (e.value.hint or "") and "without --recalibrate" in (e.value.hint or "")
    assert (sorted(p.name for p in corrected_segments.iterdir()),
            (corrected_segments / "manifest.json").read_bytes()) == before
