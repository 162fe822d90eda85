"""open() trusts nothing it cannot verify: damaged directories fail by name, clearly."""

from __future__ import annotations

import json

import pytest

from adn_edge.errors import AdnError
from adn_edge.runtime import EngineSwitcher


def _flip(path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("segmented", [False, True], ids=["monolithic", "segmented"])
@pytest.mark.parametrize("damage", ["tampered", "truncated", "missing"])
def test_damaged_artifact_is_refused_by_name(dir_copy, damage, segmented):
    name = "resnet_tiny_seg2_skip.onnx" if segmented else "resnet_tiny_0101.onnx"
    p = dir_copy / name
    if damage == "tampered":
        _flip(p)
    elif damage == "truncated":
        p.write_bytes(p.read_bytes()[:1000])
    else:
        p.unlink()
    want = "missing from" if damage == "missing" else "does not match the sha256"
    with pytest.raises(AdnError, match=f"{name}.*{want}"):
        EngineSwitcher.open(dir_copy, backend="onnxruntime", segmented=segmented, threads=1)


def test_only_requested_artifacts_are_needed(dir_copy):
    _flip(dir_copy / "resnet_tiny_0101.onnx")
    with EngineSwitcher.open(dir_copy, subnets=["1111", "0000"], threads=1) as sw:
        assert sw.codes == ("1111", "0000")


def test_default_verification_covers_backends_that_do_not_verify(dir_copy):
    """A backend that does not check files itself gets them checked by open()."""
    from adn_edge.runtime.backend import Backend, _BACKENDS, register_backend

    @register_backend("test-trusting", available=lambda: None, priority=-100)
    class Trusting(Backend):
        def run(self, code, batch):  # pragma: no cover - never reached
            raise AssertionError

    try:
        _flip(dir_copy / "resnet_tiny_1111.onnx")
        with pytest.raises(AdnError, match="resnet_tiny_1111.onnx.*sha256"):
            EngineSwitcher.open(dir_copy, backend="test-trusting", subnets="1111")
    finally:
        _BACKENDS.pop("test-trusting")


def test_manifest_of_another_schema(dir_copy):
    m = json.loads((dir_copy / "manifest.json").read_text())
    m["schema"] = 99
    (dir_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(AdnError, match="manifest schema 99.*reads schema 1"):
        EngineSwitcher.open(dir_copy)


def test_not_a_model_directory(tmp_path, dir_copy):
    with pytest.raises(AdnError, match="does not exist"):
        EngineSwitcher.open(tmp_path / "nowhere")
    with pytest.raises(AdnError, match="no manifest.json"):
        EngineSwitcher.open(tmp_path)
    (dir_copy / "manifest.json").write_text('{"schema": 1')
    with pytest.raises(AdnError, match="not valid JSON"):
        EngineSwitcher.open(dir_copy)


def test_subnet_not_exported(dir_copy):
    m = json.loads((dir_copy / "manifest.json").read_text())
    del m["subnets"]["0101"]
    (dir_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(AdnError, match="Sub-network 0101 is not in this model directory"):
        EngineSwitcher.open(dir_copy, subnets=["1111", "0101"], segmented=False)
    with EngineSwitcher.open(dir_copy, subnets="all", threads=1, segmented=False) as sw:  # 'all' = what it holds
        assert len(sw.codes) == 15 and "0101" not in sw.codes


def test_segmented_needs_segments(dir_copy):
    m = json.loads((dir_copy / "manifest.json").read_text())
    del m["segments"]
    (dir_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(AdnError, match="no segment graphs"):
        EngineSwitcher.open(dir_copy, segmented=True)
