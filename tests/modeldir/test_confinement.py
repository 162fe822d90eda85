"""Issue 13, item 1: a manifest cannot make adn-edge read or write outside its directory.

Every path read from a manifest is relative, normalised and resolves (symlinks
included) inside the directory; names built from manifest fields come from validated
fields only (``arch`` an identifier, codes canonical, ``num_stages`` bounded); a
listed file that is not a regular file is refused before it is read. Each case is
refused with an AdnError naming the field or the file, by the loader, by
``EngineSwitcher.open`` and by the low-level readers that tools call directly.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.modeldir import manifest
from adn_edge.runtime import EngineSwitcher
from tests._util import run_cli
from tests.modeldir._mdir import ARCH, Reads, reference_logits, reads_outside, sha256

GRAPH = f"{ARCH}_1111.onnx"


def _edit(d: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = d / manifest.FILENAME
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _open(d: Path, **kw: Any) -> EngineSwitcher:
    kw.setdefault("segmented", False)  # the monolithic graphs, unless a test asks for the segments
    return EngineSwitcher.open(d, backend="onnxruntime", warmup=False, threads=1, **kw)


def _decoy(d: Path) -> Path:
    """``outside/evil.onnx`` beside the directory: the bytes of a listed graph, so its
    sha256 matches the record and only confinement can refuse it."""
    evil = d.parent / "outside" / "evil.onnx"
    evil.write_bytes((d / GRAPH).read_bytes())
    return evil


def _within(seconds: float, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread; (finished, result or exception)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return (not t.is_alive()), (box[0] if box else None)


# ------------------------------------------------------------------ paths in records


@pytest.mark.parametrize("kind", ["traversal", "absolute", "dot-segments"])
def test_a_record_pointing_outside_is_refused_by_name(mdir, kind):
    evil = _decoy(mdir)
    path = {"traversal": "../outside/evil.onnx", "absolute": str(evil),
            "dot-segments": f"./sub/../../outside/{evil.name}"}[kind]
    _edit(mdir, lambda m: m["subnets"]["1111"]["files"]["onnx"].update(path=path))
    with pytest.raises(AdnError, match=r"subnets\.1111\.files\.onnx\.path must be"):
        manifest.load(mdir)
    with Reads() as reads, pytest.raises(AdnError, match=r"subnets\.1111\.files\.onnx\.path"):
        _open(mdir)
    assert str(evil) not in reads.paths
    # Tools that hold a record without a validated manifest (build, quantize) read through these:
    rec = {"path": path, "sha256": sha256(evil.read_bytes()), "bytes": evil.stat().st_size}
    for reader in (manifest.verify_file, manifest.read_verified):
        with Reads() as reads, pytest.raises(AdnError, match="inside the model directory"):
            reader(mdir, rec)
        assert str(evil) not in reads.paths


def test_segment_and_engine_records_are_confined_too(mdir):
    _decoy(mdir)

    def change(m: dict[str, Any]) -> None:
        m["segments"]["parts"][2]["files_fp16"]["skip"]["path"] = "../outside/evil.onnx"
        m["subnets"]["1111"]["engines"]["fp16"]["path"] = "/etc/passwd"

    _edit(mdir, change)
    with pytest.raises(AdnError) as err:
        manifest.load(mdir)
    assert "segments.parts[2].files_fp16.skip.path" in str(err.value)
    assert "subnets.1111.engines.fp16.path" in str(err.value)


def test_symlink_leading_out_is_refused(mdir):
    evil = _decoy(mdir)
    (mdir / GRAPH).unlink()
    (mdir / GRAPH).symlink_to(evil)
    manifest.load(mdir)  # the text is fine; where it leads is checked when it is read
    with Reads() as reads, pytest.raises(AdnError, match=f"{GRAPH}.*resolves to .*outside the model directory"):
        _open(mdir)
    assert reads_outside(reads.paths, mdir, mdir.parent) == []
    rec = manifest.load(mdir)["subnets"]["1111"]["files"]["onnx"]
    for reader in (manifest.verify_file, manifest.read_verified):
        with pytest.raises(AdnError, match="outside the model directory"):
            reader(mdir, rec)


def test_symlinked_folder_leading_out_is_refused(mdir):
    evil = _decoy(mdir)
    (mdir / "store").symlink_to(evil.parent, target_is_directory=True)
    _edit(mdir, lambda m: m["subnets"]["1111"]["files"]["onnx"].update(path="store/evil.onnx"))
    with pytest.raises(AdnError, match="resolves to .*outside the model directory"):
        _open(mdir)


def test_symlink_to_dev_zero_is_refused(mdir):
    """Before, read_bytes() on /dev/zero never returned (it filled the memory)."""
    (mdir / GRAPH).unlink()
    (mdir / GRAPH).symlink_to("/dev/zero")
    done, outcome = _within(20, lambda: _open(mdir))
    assert done, "reading a symlink to /dev/zero did not return"
    assert isinstance(outcome, AdnError) and "outside the model directory" in str(outcome)


def test_symlink_inside_the_directory_is_followed(mdir):
    """A link to another file of the directory is fine: it is the same bytes."""
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    want = reference_logits(mdir, batch)["1111"]
    (mdir / "store").mkdir()
    os.replace(mdir / GRAPH, mdir / "store" / "real.onnx")
    (mdir / GRAPH).symlink_to(Path("store") / "real.onnx")
    with Reads() as reads:
        sw = _open(mdir, subnets="1111")
    with sw:
        np.testing.assert_allclose(sw.infer(batch), want, rtol=1e-5, atol=1e-6)
    assert reads_outside(reads.paths, mdir, mdir.parent) == []
    assert manifest.verify_file(mdir, manifest.load(mdir)["subnets"]["1111"]["files"]["onnx"]) == \
        (mdir / "store" / "real.onnx").resolve()


def test_file_record_refuses_a_name_outside(mdir):
    _decoy(mdir)
    with pytest.raises(AdnError, match="inside the model directory"):
        manifest.file_record(mdir, "../outside/evil.onnx")


@pytest.mark.parametrize("path, ok", [
    ("resnet_tiny_1111.onnx", True), ("sub/x.onnx", True), ("..x.onnx", True),
    ("", False), ("/abs.onnx", False), ("../x.onnx", False), ("a/../x.onnx", False), ("./x.onnx", False),
    ("a//x.onnx", False), ("a/", False), (".", False), ("..", False), ("a\\..\\x", False), ("C:/x.onnx", False),
    ("C:x.onnx", False), ("x\x00.onnx", False), (None, False), (7, False),
])
def test_the_textual_path_rule(path, ok):
    assert (manifest.relpath_problem(path) is None) is ok


# ------------------------------------------------------------------ non-regular files


def _unblock(fifo: Path) -> None:
    """Let a reader blocked on ``fifo`` go (it then reads EOF)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader waiting
    os.close(fd)


@pytest.mark.parametrize("reader", ["open", "verify_file", "read_verified"])
def test_a_fifo_in_a_record_is_refused_without_blocking(mdir, reader):
    fifo = mdir / GRAPH
    fifo.unlink()
    os.mkfifo(fifo)
    rec = manifest.load(mdir)["subnets"]["1111"]["files"]["onnx"]
    call = {"open": lambda: _open(mdir), "verify_file": lambda: manifest.verify_file(mdir, rec),
            "read_verified": lambda: manifest.read_verified(mdir, rec)}[reader]
    t0 = time.perf_counter()
    try:
        done, outcome = _within(20, call)
    finally:
        _unblock(fifo)
    assert done, "the reader blocked on a FIFO listed in the manifest"
    assert isinstance(outcome, AdnError), outcome
    assert "FIFO, not a regular file" in str(outcome) and GRAPH in str(outcome)
    assert time.perf_counter() - t0 < 10


def test_a_directory_in_a_record_is_refused(mdir):
    (mdir / GRAPH).unlink()
    (mdir / GRAPH).mkdir()
    with pytest.raises(AdnError, match=f"{GRAPH} .* is a directory, not a regular file"):
        _open(mdir)


def test_a_size_unlike_the_record_is_refused_before_reading(mdir):
    _edit(mdir, lambda m: m["subnets"]["1111"]["files"]["onnx"].update(bytes=10))
    with pytest.raises(AdnError, match=f"{GRAPH} .*does not match the sha256.*the record says 10"):
        _open(mdir)


# ------------------------------------------------------------------ names built from fields


def test_arch_with_a_path_is_refused_and_quantize_writes_nothing_outside(mdir, capsys):
    root = mdir.parent.parent  # "../../escaped/x" from the directory
    _edit(mdir, lambda m: m.update(arch="../../escaped/x"))
    with pytest.raises(AdnError, match=r"arch must be a registry name .*got '\.\./\.\./escaped/x'"):
        manifest.load(mdir)
    before = sorted(p.name for p in mdir.iterdir())
    code, _, err = run_cli(["quantize", mdir, "--calib", "builtin", "--subnet", "1111", "--samples", "10",
                            "--data", "none"], capsys)
    assert code == 2 and "arch must be a registry name" in " ".join(err.split())
    assert not (root / "escaped").exists()
    assert sorted(p.name for p in mdir.iterdir()) == before


@pytest.mark.parametrize("arch", ["ResNet", "1resnet", "resnet-50", "a.b", "x" * 65, "", "résnet"])
def test_arch_must_be_an_identifier(mdir, arch):
    _edit(mdir, lambda m: m.update(arch=arch))
    with pytest.raises(AdnError, match="arch must be a registry name"):
        manifest.load(mdir)


@pytest.mark.parametrize("key", ["101", "11111", "1x11", "TFTF", "", " 0101", "0" * 40])
def test_subnet_keys_must_be_canonical_codes_of_num_stages(mdir, key):
    def change(m: dict[str, Any]) -> None:
        entry = m["subnets"].pop("0101")
        m["subnets"][key] = entry

    _edit(mdir, change)
    with pytest.raises(AdnError, match=f"subnets has the key {key!r}"):
        manifest.load(mdir)


def test_segment_codes_and_parts_follow_num_stages(mdir):
    _edit(mdir, lambda m: m["segments"]["subnets"].update({"101": {"gmacs": 1.0}}))
    with pytest.raises(AdnError, match="segments.subnets has the key '101'"):
        manifest.load(mdir)


def _no_huge_enumeration(monkeypatch: pytest.MonkeyPatch) -> None:
    real = subnet.all_codes

    def guarded(num_stages: int) -> list[str]:
        if num_stages > 8:
            raise AssertionError(f"2^{num_stages} codes enumerated")
        return real(num_stages)

    monkeypatch.setattr(subnet, "all_codes", guarded)


@pytest.mark.parametrize("value", [40, 9, 0, -1, 2**40])
def test_num_stages_out_of_bounds_is_refused_before_enumerating(mdir, monkeypatch, value):
    _no_huge_enumeration(monkeypatch)
    _edit(mdir, lambda m: m.update(num_stages=value))
    with pytest.raises(AdnError, match="num_stages must be"):
        manifest.load(mdir)
    for segmented in (False, True):
        done, outcome = _within(20, lambda segmented=segmented: _open(mdir, segmented=segmented))
        assert done and isinstance(outcome, AdnError) and "num_stages" in str(outcome), outcome


def test_the_checked_directory_is_usable(mdir):
    """The damage above is what is refused: the untouched copy opens and runs."""
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with Reads() as reads:
        sw = _open(mdir)
        sw2 = _open(mdir, segmented=True, subnets="0101")
    with sw, sw2:
        assert sw.codes == ("1111", "0101", "0000")
        np.testing.assert_allclose(sw2.infer(batch), sw.infer(batch, "0101"), rtol=1e-4, atol=1e-6)
    assert reads_outside(reads.paths, mdir, mdir.parent) == []
