"""Issue 13 acceptance: a mutated manifest gives a clear AdnError or a correct result,
never a raw exception, and nothing outside the model directory is read.

A real manifest (the exporter's, with engine and quantization records, see
``_mdir.make_base``) is damaged in at least 500 ways per run: any value replaced by
null, a string, an integer (huge ones too), a float (NaN, infinities), a list or an
object; keys deleted; sub-network codes renamed to non-canonical or wrong-length
spellings; ``num_stages`` out of bounds; listed paths turned into traversals,
absolute paths, symlinks out of (and within) the directory, FIFOs, directories and
``/dev/zero``; listed files truncated or removed. For each, ``manifest.load`` and
``EngineSwitcher.open(dir, backend="onnxruntime", warmup=False)`` (monolithic, and
segmented when the manifest loads) must return or raise AdnError, every file the
process opened meanwhile (an audit hook, see ``_mdir.Reads``) must lie inside the
directory or be a library/system read, and an open switcher must compute what the
undamaged graphs compute.

Reproducible: hypothesis runs derandomized, without an example database, so every
CI run tries the same examples. What the C++ inside ONNX Runtime reads is not seen by
the audit hook; it is handed bytes, never a path, by the backends under test.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adn_edge.errors import AdnError
from adn_edge.modeldir import manifest
from adn_edge.runtime import EngineSwitcher
from tests.modeldir._mdir import ARCH, Reads, link_copy, reads_outside, reference_logits

EXAMPLES = 600
REQUIRED = 500
GRAPH = f"{ARCH}_1111.onnx"
BATCH = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)

Path_ = tuple[Any, ...]


def _walk(node: Any, at: Path_ = ()) -> list[Path_]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _walk(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, (*at, i))
    return out


def _locate(m: Any, at: Path_) -> tuple[Any, Any] | None:
    """(container, key) of ``at`` in ``m``, or None when an earlier mutation removed it."""
    node = m
    for k in at[:-1]:
        if isinstance(node, dict) and k in node or isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return None
    k = at[-1]
    if isinstance(node, dict) and k in node or isinstance(node, list) and isinstance(k, int) and k < len(node):
        return node, k
    return None


HUGE = [2**31, 2**63, -(2**63), 10**30, 2**40]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), -0.0, 1e308]),
    st.text(max_size=10), st.sampled_from(["", "1111", "../x", "/etc/passwd", "NCHW", "float32", "0" * 64]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(st.text(max_size=5), SCALARS, max_size=3))

TRAVERSALS = ["../outside/evil.onnx", "<abs-evil>", "/dev/zero", "/etc/passwd", f"./{GRAPH}", f"sub/../{GRAPH}",
              f"{GRAPH}/", "a\\b.onnx", "nul\x00.onnx", "", "C:\\evil.onnx", "..", ".", f"../model/{GRAPH}",
              "<link-out>", "<link-in>", "<link-dir-out>", "<fifo>", "<dir>", "<link-dev-zero>",
              f"{ARCH}_0000.onnx", "missing.onnx"]
BAD_CODES = ["101", "11111", "1x11", "TFTF", "tftf", "", "0" * 8, "1" * 40, "super", "base", "all", " 1111", "0000"]
NUM_STAGES = [0, 1, 3, 5, 8, 9, 40, 2**40, -1, 4.0, "4", True, None, 2**63]
FILE_DAMAGE = ["link-out", "link-in", "fifo", "dir", "truncate", "delete", "link-dev-zero"]


class Fuzzer:
    """One base directory, the mutations, and the checks of one example."""

    def __init__(self, base: Path, work: Path) -> None:
        self.base = base
        self.work = work
        self.manifest = json.loads((base / manifest.FILENAME).read_text())
        self.paths = [p for p in _walk(self.manifest) if p]
        self.file_paths = [p for p in self.paths if p[-1] == "path" and isinstance(_get(self.manifest, p), str)
                           and "source" not in p and "cache" not in p]
        self.key_paths = [p for p in self.paths if isinstance(p[-1], str)]
        self.listed = sorted({_get(self.manifest, p) for p in self.file_paths})
        self.reference = reference_logits(base, BATCH)
        self.count = 0
        self.outcomes: Counter[str] = Counter()

    def strategy(self) -> st.SearchStrategy[list[tuple[Any, ...]]]:
        op = st.one_of(
            st.tuples(st.just("replace"), st.sampled_from(self.paths), VALUES),
            st.tuples(st.just("delete"), st.sampled_from(self.paths)),
            st.tuples(st.just("rename"), st.sampled_from(self.key_paths),
                      st.one_of(st.sampled_from(BAD_CODES), st.text(max_size=6))),
            st.tuples(st.just("path"), st.sampled_from(self.file_paths), st.sampled_from(TRAVERSALS)),
            st.tuples(st.just("num_stages"), st.sampled_from(NUM_STAGES)),
            st.tuples(st.just("file"), st.sampled_from(self.listed), st.sampled_from(FILE_DAMAGE)),
        )
        return st.lists(op, min_size=1, max_size=3)

    # ------------------------------------------------------------ one example

    def run(self, ops: list[tuple[Any, ...]]) -> None:
        self.count += 1
        root = self.work / f"ex{self.count}"
        d = link_copy(self.base, root / "model")
        (root / "outside").mkdir()
        os.link(self.base / GRAPH, root / "outside" / "evil.onnx")  # a listed graph's bytes: its sha256 matches
        m = copy.deepcopy(self.manifest)
        fifos: list[Path] = []
        try:
            for op in ops:
                self._apply(op, m, d, root, fifos)
            (d / manifest.FILENAME).write_text(json.dumps(m, allow_nan=True))
            self._check(d, root, fifos, ops)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _apply(self, op: tuple[Any, ...], m: dict[str, Any], d: Path, root: Path, fifos: list[Path]) -> None:
        kind = op[0]
        if kind == "num_stages":
            m["num_stages"] = op[1]
            return
        if kind == "file":
            self._damage(d / op[1], op[2], root, fifos)
            return
        where = _locate(m, op[1])
        if where is None:
            return
        node, key = where
        if kind == "replace":
            node[key] = copy.deepcopy(op[2])
        elif kind == "delete":
            del node[key]
        elif kind == "rename" and isinstance(node, dict):
            node[op[2]] = node.pop(key)
        elif kind == "path":
            node[key] = self._path_value(op[2], d, root, fifos)

    def _path_value(self, spec: str, d: Path, root: Path, fifos: list[Path]) -> str:
        evil = root / "outside" / "evil.onnx"
        if spec == "<abs-evil>":
            return str(evil)
        if spec == "<link-out>":
            _symlink(d / "link-out.onnx", evil)
            return "link-out.onnx"
        if spec == "<link-in>":  # another name for a listed graph: the same bytes, allowed
            _symlink(d / "link-in.onnx", Path(GRAPH))
            return "link-in.onnx"
        if spec == "<link-dir-out>":
            _symlink(d / "out", evil.parent)
            return "out/evil.onnx"
        if spec == "<link-dev-zero>":
            _symlink(d / "zero.onnx", Path("/dev/zero"))
            return "zero.onnx"
        if spec == "<fifo>":
            if not (d / "pipe.onnx").exists():
                os.mkfifo(d / "pipe.onnx")
                fifos.append(d / "pipe.onnx")
            return "pipe.onnx"
        if spec == "<dir>":
            (d / "folder.onnx").mkdir(exist_ok=True)
            return "folder.onnx"
        return spec

    def _damage(self, p: Path, how: str, root: Path, fifos: list[Path]) -> None:
        if not (p.is_file() and not p.is_symlink()):
            return  # damaged by an earlier operation already
        if how == "truncate":
            data = p.read_bytes()
            p.unlink()  # never write through the hard link into the base directory
            p.write_bytes(data[: len(data) // 2])
            return
        if how == "link-in":
            store = p.parent / "store"
            store.mkdir(exist_ok=True)
            os.replace(p, store / p.name)
            p.symlink_to(Path("store") / p.name)
            return
        p.unlink()
        if how == "link-out":
            shutil.copyfile(self.base / p.name, root / "outside" / p.name)
            p.symlink_to(root / "outside" / p.name)  # the right bytes, outside: only confinement refuses it
        elif how == "fifo":
            os.mkfifo(p)
            fifos.append(p)
        elif how == "dir":
            p.mkdir()
        elif how == "link-dev-zero":
            p.symlink_to("/dev/zero")

    # ------------------------------------------------------------ the checks

    def _check(self, d: Path, root: Path, fifos: list[Path], ops: list[tuple[Any, ...]]) -> None:
        blocked: list[Path] = []

        def unblock() -> None:  # a reader stuck on a FIFO: let it go, and fail the example
            for f in fifos:
                try:
                    fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                blocked.append(f)
                os.close(fd)

        watchdog = threading.Timer(10.0, unblock)
        watchdog.start()
        opened: list[tuple[str, EngineSwitcher]] = []
        try:
            with Reads() as reads:
                loaded = _attempt(lambda: manifest.load(d), ops, "manifest.load")
                sw = _attempt(lambda: EngineSwitcher.open(d, backend="onnxruntime", warmup=False, threads=1,
                                                          segmented=False), ops,
                              "EngineSwitcher.open")
                if isinstance(sw, EngineSwitcher):
                    opened.append(("monolithic", sw))
                if not isinstance(loaded, AdnError):
                    seg = _attempt(lambda: EngineSwitcher.open(d, backend="onnxruntime", warmup=False, threads=1,
                                                               segmented=True, subnets="1111"), ops,
                                   "EngineSwitcher.open(segmented=True)")
                    if isinstance(seg, EngineSwitcher):
                        opened.append(("segmented", seg))
            assert not blocked, f"a reader blocked on a FIFO: {blocked} after {ops!r}"
            outside = reads_outside(reads.paths, d, root)
            assert outside == [], f"read outside the model directory: {outside} after {ops!r}"
            self.outcomes["loaded" if not isinstance(loaded, AdnError) else "refused at load"] += 1
            for mode, sw in opened:
                self.outcomes[f"open {mode}"] += 1
                for code in sw.codes:
                    got = sw.infer(BATCH, code)
                    np.testing.assert_allclose(got, self.reference[code], rtol=1e-4, atol=1e-5,
                                               err_msg=f"{mode} {code} after {ops!r}")
        finally:
            watchdog.cancel()
            for _, sw in opened:
                sw.close()


def _get(m: Any, at: Path_) -> Any:
    for k in at:
        m = m[k]
    return m


def _symlink(link: Path, target: Path) -> None:
    if not os.path.lexists(link):
        link.symlink_to(target)


def _attempt(fn: Any, ops: list[tuple[Any, ...]], what: str) -> Any:
    """The result, or the AdnError raised; any other exception fails the example by name."""
    try:
        return fn()
    except AdnError as exc:
        assert "\n" not in str(exc), f"{what}: a multi-line AdnError after {ops!r}: {exc}"
        return exc
    except Exception as exc:  # noqa: BLE001 - this is what the test is about
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc} after {ops!r}") from exc


def test_mutated_manifests_give_adn_errors_or_correct_results(base_dir, tmp_path):
    fuzz = Fuzzer(base_dir, tmp_path)

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz.strategy())
    def one(ops: list[tuple[Any, ...]]) -> None:
        fuzz.run(ops)

    t0 = time.perf_counter()
    one()
    seconds = time.perf_counter() - t0
    print(f"\n{fuzz.count} mutated manifests in {seconds:.1f} s: {dict(fuzz.outcomes)}")
    assert fuzz.count >= REQUIRED, f"only {fuzz.count} examples ran"
    # Both outcomes occur often: a fuzzer refused everything (or nothing) would prove little.
    assert fuzz.outcomes["refused at load"] >= 100 and fuzz.outcomes["open monolithic"] >= 25, fuzz.outcomes
