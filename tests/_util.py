"""Shared test helpers: official-format random weights, fixture paths, references."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from adn_edge.models.random_weights import random_state_dict  # noqa: F401 (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
# Copies of ../shared/fixtures (the design's data), so a clone tests on its own.
FIXTURES = REPO / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official"


@lru_cache(maxsize=None)
def keys_fixture(arch: str) -> dict:
    return json.loads((OFFICIAL / f"{arch}.keys.json").read_text())


@lru_cache(maxsize=None)
def subnets_fixture() -> dict:
    return json.loads((OFFICIAL / "subnets.json").read_text())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, the relative error used throughout the tests."""
    a64, b64 = a.detach().double(), b.detach().double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``adn-edge ARGS`` in-process; return (exit code, stdout, stderr)."""
    import pytest

    from adn_edge.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 1
    return code, out.out, out.err


def export_and_compare(model, code: str, size: int, batches: tuple[int, ...] = (1, 3)):
    """Export sub-network ``code`` with the project's exporter (traced at batch 2, dynamic
    batch), run it in ONNX Runtime at each batch size, and compare with the ADN forward
    (relative error <= 1e-4). Returns the ONNX model for further graph checks."""
    import onnxruntime as ort

    from adn_edge import subnet
    from adn_edge.export.onnx_graph import trace_to_onnx
    from adn_edge.materialize import materialize
    from adn_edge.models.folding import Folder

    graph = trace_to_onnx(materialize(model, code, Folder(model)), size, dynamic_batch=True, batch=2)
    assert not {"If", "Loop", "BatchNormalization"} & {n.op_type for n in graph.graph.node}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for n in batches:
        xb = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            ref = model(xb, skip=subnet.to_skip(code))
        (out,) = sess.run(["logits"], {"input": xb.numpy()})
        assert out.shape == tuple(ref.shape)
        assert rel_err(torch.from_numpy(out), ref) <= 1e-4, (code, n)
    return graph


def assert_parts_depend_only_on_their_flag(model, codes: list[str]) -> None:
    """``static_stages`` part k is the same (same parameters, equal buffers) for every
    code with the same flag k: what lets segmented mode ship 2*S graphs, not 2^S."""
    from adn_edge.models.folding import Folder

    folder = Folder(model)
    parts = {c: model.static_stages(c, folder) for c in codes}
    for k in range(len(codes[0])):
        for flag in "01":
            sigs = []
            for c in (c for c in codes if c[k] == flag):
                part = parts[c][k]
                sigs.append(([id(p) for p in part.parameters()], [b.clone() for b in part.buffers()]))
            for ids, bufs in sigs[1:]:
                assert ids == sigs[0][0], (k, flag)
                assert len(bufs) == len(sigs[0][1]) and all(map(torch.equal, bufs, sigs[0][1])), (k, flag)


def executed_modules(model, x: torch.Tensor, code: str) -> set[str]:
    """Names of the modules whose forward ran for sub-network ``code``."""
    from adn_edge import subnet

    names = {id(m): n for n, m in model.named_modules()}
    ran: set[str] = set()
    handles = [m.register_forward_hook(lambda mod, i, o: ran.add(names[id(mod)])) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x, skip=subnet.to_skip(code))
    finally:
        for h in handles:
            h.remove()
    return ran


def assert_follows_official_trace(model, arch: str, x: torch.Tensor, codes: list[str]) -> dict[str, set[str]]:
    """For every code, the skippable blocks and norm twins that run are exactly the
    official ones (the keys fixture's ``stages``, recorded from the official forward).
    ``model`` may be a narrow variant, but must have the official module tree."""
    from adn_edge.models import create_model

    stages = keys_fixture(arch)["stages"]
    with torch.device("meta"):
        full = create_model(arch)
    assert [n for n, _ in model.named_modules()] == [n for n, _ in full.named_modules()]
    out = {}
    for code in codes:
        ran = executed_modules(model, x, code)
        for k, stage in enumerate(stages):
            skipped = code[k] == "0"
            for blk in stage["skippable_blocks"]:
                assert (blk in ran) != skipped, (code, blk)
            for main, twin in stage["norm_twins"]:
                assert (twin in ran) == skipped and (main in ran) != skipped, (code, main)
        out[code] = ran
    return out


def assert_perturbation_hits_exactly(model, x: torch.Tensor, codes: list[str], param: str, stage: int,
                                     changes_when_skipped: bool) -> None:
    """Perturb one tensor: exactly the codes that read it (its stage skipped or not, as
    ``changes_when_skipped`` says) change their logits; no other code does."""
    from adn_edge import subnet

    with torch.no_grad():
        before = {c: model(x, skip=subnet.to_skip(c)) for c in codes}
        model.get_parameter(param).add_(0.5)
        after = {c: model(x, skip=subnet.to_skip(c)) for c in codes}
    for c in codes:
        reads = (c[stage] == "0") == changes_when_skipped
        assert (not torch.equal(before[c], after[c])) == reads, c
