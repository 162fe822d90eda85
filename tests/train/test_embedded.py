"""The embedded default model: present, loadable, and as accurate as its record says."""

from __future__ import annotations

import pytest

from adn_edge.data import EMBEDDED_ARCH, EMBEDDED_DATASET, embedded_info, embedded_path, load_embedded
from adn_edge.fileio import sha256_file
from adn_edge.train import data as data_mod
from adn_edge.train.evaluate import evaluate_model


def test_embedded_model_matches_its_record():
    info = embedded_info()
    path = embedded_path()
    assert path.stat().st_size < 4_000_000 and sha256_file(path) == info["sha256"]
    assert info["command"].startswith("adn-edge train ") and len(info["subnets"]) == 16
    model, ck = load_embedded()
    assert model.arch == EMBEDDED_ARCH and ck.container == "adn-edge"
    prep = data_mod.preprocess_for_checkpoint(model.arch, ck.header)
    assert prep.input_size == info["dataset"]["input_size"]
    assert info["dataset"]["name"] == EMBEDDED_DATASET
    test = data_mod.load_builtin(EMBEDDED_DATASET, "test", prep)
    assert len(test) == info["dataset"]["test"]
    res = evaluate_model(model, test, ["super", "base"])
    for code, acc in res.subnets.items():
        assert acc.top1 == pytest.approx(info["subnets"][code]["top1"], abs=1e-3), code
    # The record's claim that recalibration lifts every sub-network near the super-net.
    recal = [s["top1_recalibrated"] for s in info["subnets"].values()]
    assert min(recal) >= info["subnets"]["1111"]["top1_recalibrated"] - 1.5
