"""``adn-edge bench --device cuda`` with the torch backend (no TensorRT needed).

Needs a CUDA GPU: skipped with the reason where there is none (CI never has one).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from adn_edge import checkpoint  # noqa: E402
from adn_edge.bench.harness import BenchOptions, run_bench  # noqa: E402
from adn_edge.export import export  # noqa: E402
from adn_edge.models import create_model  # noqa: E402
from adn_edge.models.random_weights import randomize  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]


def test_cuda_bench_with_the_torch_backend_reports_device_time(tmp_path) -> None:
    model = randomize(create_model("resnet_tiny"), input_size=32)
    checkpoint.save(model, tmp_path / "tiny.safetensors")  # the torch backend reloads the manifest's source
    model, ckpt = checkpoint.load(tmp_path / "tiny.safetensors")
    export(model, tmp_path, ["1111", "0000"], source=ckpt.source_record())
    report = run_bench(tmp_path, BenchOptions(device="cuda", power="none", iterations=50, warmup_s=0.2))
    assert report["backend"] == "torch" and report["device"]["kind"] == "cuda"
    for e in report["subnets"].values():
        assert e["iterations"] >= 50
        assert 0 < e["device_ms"]["p50"] <= e["latency_ms"]["p50"]
