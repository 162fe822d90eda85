"""Model-directory integrity against several writers, stale results and swapped records.

Real processes, not mocks, where the hazard is between processes (docs/model-directory.md)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import pytest

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.modeldir import manifest
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.names import LOCK, RETIRED

CODES = subnet.all_codes(4)


def _export_worker(out: str, codes: list[str], seed: int, go: float) -> None:
    import torch

    from adn_edge.export import Exporter
    from adn_edge.models import create_model
    from adn_edge.models.random_weights import randomize

    torch.manual_seed(0)
    model = create_model("resnet_tiny")
    randomize(model, seed=0)
    model.eval()
    exporter = Exporter(model, out, {"path": "test", "sha256": "a" * 64, "weights": "model"})
    while time.time() < go:  # start both exports at the same moment
        time.sleep(0.005)
    exporter.export(codes)


def test_two_processes_exporting_into_one_directory_lose_nothing(tmp_path: Path) -> None:
    """Before the lock, each process saved its own copy: 16 files on disk, 8 listed."""
    out = tmp_path / "d"
    ctx = mp.get_context("spawn")
    go = time.time() + 8.0
    procs = [ctx.Process(target=_export_worker, args=(str(out), list(half), 0, go))
             for half in (CODES[:8], CODES[8:])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    m = manifest.load(out)
    assert sorted(m["subnets"]) == sorted(CODES)
    listed = {e["files"]["onnx"]["path"] for e in m["subnets"].values()}
    assert listed == {p.name for p in out.glob("*.onnx")}


def _hold(directory: str, seconds: float, ready: str) -> None:
    with writing(directory, "test-holder"):
        Path(ready).touch()
        time.sleep(seconds)


def test_a_second_writer_waits_then_gives_up_clearly(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ctx = mp.get_context("spawn")
    holder = ctx.Process(target=_hold, args=(str(tmp_path), 6.0, str(ready)))
    holder.start()
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        said: list[str] = []
        with pytest.raises(AdnError, match=r"test-holder.*gave up after 0.3 s") as e:
            with writing(tmp_path, "export", timeout_s=0.3, notify=said.append):
                pass
        assert said and "waiting for `adn-edge test-holder`" in said[0]
        assert "ADN_EDGE_LOCK_TIMEOUT" in (e.value.hint or "")
    finally:
        holder.join(30)
    with writing(tmp_path, "export", timeout_s=5):  # free again once the holder is gone
        with writing(tmp_path, "eval", timeout_s=0):  # re-entrant within a process
            pass


def _die_holding(directory: str, ready: str) -> None:
    with writing(directory, "doomed"):
        Path(ready).touch()
        time.sleep(60)


def test_a_killed_writer_leaves_the_directory_unlocked(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_die_holding, args=(str(tmp_path), str(ready)))
    p.start()
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    p.kill()  # SIGKILL: no cleanup runs
    p.join(30)
    with writing(tmp_path, "export", timeout_s=2):
        assert (tmp_path / LOCK).exists()


def _swap(d: Path, a: str, b: str, group: str = "files") -> None:
    m = json.loads((d / "manifest.json").read_text())
    ea, eb = m["subnets"][a][group], m["subnets"][b][group]
    m["subnets"][a][group], m["subnets"][b][group] = eb, ea
    (d / "manifest.json").write_text(json.dumps(m))


def test_swapped_records_are_refused_on_open(model_dir: Path, tmp_path: Path) -> None:
    """Hashes still valid, records swapped: each graph's own metadata gives it away."""
    from adn_edge.runtime import EngineSwitcher

    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    _swap(d, "1111", "0000")
    with pytest.raises(AdnError, match=r"listed in manifest.json as sub-network 1111, but the graph says "
                                       r"adn.subnet='0000'"):
        EngineSwitcher.open(d, backend="onnxruntime", subnets="all", warmup=False, segmented=False)
    for opts in ({"share_weights": False}, {"graph_optimization": "all", "share_weights": False}):
        with pytest.raises(AdnError, match="swapped or edited"):
            EngineSwitcher.open(d, backend="onnxruntime", subnets=["1111"], warmup=False, segmented=False, **opts)
    with EngineSwitcher.open(d, backend="onnxruntime", subnets=["1010"], warmup=False, segmented=False):
        pass  # untouched records still open


def test_swapped_segment_forms_are_refused(model_dir: Path, tmp_path: Path) -> None:
    from adn_edge.runtime import EngineSwitcher

    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    files = m["segments"]["parts"][2]["files"]
    files["full"], files["skip"] = files["skip"], files["full"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(AdnError, match=r"segment 2 \(full\).*adn.kind='skip'"):
        EngineSwitcher.open(d, backend="onnxruntime", segmented=True, subnets=["1111"], warmup=False)


def test_results_of_other_weights_are_ignored_and_retired(model_dir: Path, tmp_path: Path) -> None:
    """A re-export of other weights used to keep eval.json/bench-cpu.json, and policies
    ranked the new weights by the old model's accuracy."""
    import torch

    from adn_edge.export import Exporter
    from adn_edge.models import create_model
    from adn_edge.models.random_weights import randomize
    from adn_edge.runtime.policies import Policy
    from adn_edge.train.evaluate import EvalResult, SubnetAccuracy, write_eval
    from adn_edge.modeldir.results import identity

    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    m = manifest.load(d)
    result = EvalResult("digits", "test", "onnxruntime",
                        {c: SubnetAccuracy(c, correct1=10 if c == "0000" else 1, samples=10) for c in CODES},
                        precision="fp32", identity=identity(m, CODES))
    write_eval(d, result)
    assert Policy.from_directory(d).most_accurate_within() == "0000"  # the (made up) evaluation counts

    forged = json.loads((d / "eval.json").read_text())
    forged["identity"]["source_sha256"] = "f" * 64
    (d / "eval.json").write_text(json.dumps(forged))
    p = Policy.from_directory(d)
    assert p.quality_by == "gmacs" and any("measured other weights" in n for n in p.notes)
    (d / "eval.json").write_text(json.dumps({**forged, "identity": identity(m, CODES)}))

    torch.manual_seed(1)
    other = create_model("resnet_tiny")
    randomize(other, seed=1)
    old_engines = {e["files"]["onnx"]["path"] for e in m["subnets"].values()}
    Exporter(other.eval(), d, {"path": "other", "sha256": "b" * 64, "weights": "model"}).export(["1111"])
    m2 = manifest.load(d)
    assert list(m2["subnets"]) == ["1111"]
    assert {p.name for p in d.glob("*.onnx")} >= {m2["subnets"]["1111"]["files"]["onnx"]["path"]}
    assert not (old_engines - {m2["subnets"]["1111"]["files"]["onnx"]["path"]}) & {p.name for p in d.glob("*.onnx")}
    assert not (d / "eval.json").exists() and list((d / RETIRED).glob("*/eval.json"))
    assert Policy.from_directory(d).quality_by == "gmacs"


def test_an_evaluation_of_one_subnetwork_never_erases_the_others(model_dir: Path, tmp_path: Path) -> None:
    """`eval --precision int8 -s base` after `quantize` replaced eval-int8.json's entries
    with one: the records differed only in a key the older writer did not write."""
    from adn_edge.modeldir.results import write_eval_record

    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    base = {"schema": 1, "dataset": "digits", "split": "test", "samples": 10, "source": "onnxruntime",
            "recalibrated": False}
    write_eval_record(d, {**base, "precision": "int8", "subnets": {c: {"top1": 50.0} for c in CODES}}, "int8")
    path, notes = write_eval_record(d, {**base, "precision": "int8", "segmented": False,
                                        "subnets": {"0000": {"top1": 40.0}}}, "int8")
    rec = json.loads(path.read_text())
    assert len(rec["subnets"]) == 16 and rec["subnets"]["0000"]["top1"] == 40.0 and notes == []
    path, notes = write_eval_record(d, {**base, "samples": 99, "precision": "int8",
                                        "subnets": {"0000": {"top1": 1.0}}}, "int8")
    assert len(json.loads(path.read_text())["subnets"]) == 1 and "moved to" in notes[0]
    kept = list((d / RETIRED).glob("*/eval-int8.json"))
    assert len(json.loads(kept[0].read_text())["subnets"]) == 16  # set aside, not lost


def test_policies_of_an_int8_switcher_read_int8_accuracies(model_dir: Path, tmp_path: Path) -> None:
    from adn_edge.modeldir.results import find_eval

    d = tmp_path / "d"
    shutil.copytree(model_dir, d)
    for name in ("eval.json", "eval-int8.json", "eval-int8-segmented.json"):
        (d / name).write_text("{}")
    assert find_eval(d).name == "eval.json"
    assert find_eval(d, "int8").name == "eval-int8.json"
    assert find_eval(d, "int8", segmented=True).name == "eval-int8-segmented.json"
    assert find_eval(d, "fp16").name == "eval.json"
    os.remove(d / "eval.json")
    assert find_eval(d, "fp32") is not None


def test_evaluation_refuses_data_of_another_class_count() -> None:
    """A 1000-class model on the 10 built-in classes "measured" 0 % and wrote it down."""
    from adn_edge.train.evaluate import _check_classes

    class Data:
        num_classes = 10

    with pytest.raises(AdnError, match="has 10 classes but the model predicts 1000"):
        _check_classes(Data(), 1000, "the model")
    _check_classes(Data(), 10, "the model")  # the same classes: fine
