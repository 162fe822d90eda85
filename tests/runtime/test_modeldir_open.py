"""An opened model directory is read once and handed on."""

from __future__ import annotations

import pytest

from adn_edge.errors import AdnError
from adn_edge.modeldir import ModelDir, manifest, open_dir


def test_open_once_and_hand_on(model_dir, monkeypatch):
    opened = ModelDir.open(model_dir)
    assert opened.arch == "resnet_tiny" and opened.num_stages == 4 and opened.num_classes == 10
    assert open_dir(opened) is opened  # no second read
    assert opened.preprocess().input_size == opened.manifest["input"]["shape"][-1]
    assert opened.resolve_codes("super") == ["1111"]

    reads = []
    real = manifest.load
    monkeypatch.setattr(manifest, "load", lambda d: reads.append(d) or real(d))
    from adn_edge.runtime import EngineSwitcher

    with EngineSwitcher.open(opened, backend="onnxruntime", subnets="super", warmup=False) as sw:
        assert sw.active == "1111"
    assert reads == []  # the switcher used the opened manifest


def test_open_refuses_what_is_not_a_model_directory(tmp_path):
    with pytest.raises(AdnError, match="has no manifest.json"):
        ModelDir.open(tmp_path)
