"""Switching under load: no torn inference, no waiting, no deadlock.

The stress test runs 4 inference threads against 1 thread switching at random.
Each inference must equal the reference of the code it reports, and that code
must really have been active at some instant while the call ran (checked against
the switch log), so the tag cannot hide a mixed-up inference.
"""

from __future__ import annotations

import bisect
import random
import threading
import time

import numpy as np
import pytest

from adn_edge.runtime import EngineSwitcher
from adn_edge.runtime.backend import _BACKENDS, Backend, register_backend
from tests.runtime._helpers import CODES, TOL, rel_err

SECONDS = 3.0
INFER_THREADS = 4


@pytest.mark.parametrize(("backend", "segmented"), [("onnxruntime", False), ("onnxruntime", True), ("torch", False)],
                         ids=["onnxruntime", "onnxruntime-segmented", "torch"])
def test_stress_switch_while_inferring(model_dir, tiny_model, inputs, references, backend, segmented):
    kw = {"model": tiny_model} if backend == "torch" else {"threads": 1}
    sw = EngineSwitcher.open(model_dir, backend=backend, segmented=segmented, **kw)
    stop = threading.Event()
    results: list[tuple[str, int, np.ndarray, float, float]] = []
    errors: list[BaseException] = []
    log: list[tuple[float, float, str]] = [(0.0, time.perf_counter(), sw.active)]  # (call, return, code)

    def infer_loop(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                i = rng.randrange(len(inputs))
                t0 = time.perf_counter()
                code, out = sw.infer_tagged(inputs[i])
                results.append((code, i, out, t0, time.perf_counter()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def switch_loop() -> None:
        rng = random.Random(1)
        try:
            while not stop.is_set():
                code = rng.choice(CODES)
                t0 = time.perf_counter()
                sw.switch(code)
                log.append((t0, time.perf_counter(), code))
                time.sleep(rng.choice((0, 0.0002, 0.001)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=infer_loop, args=(s,), daemon=True) for s in range(INFER_THREADS)]
    threads.append(threading.Thread(target=switch_loop, daemon=True))
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    sw.close(timeout=20)
    assert not errors, errors[:3]

    assert len(results) >= 50 and len(log) >= 200
    assert len({r[0] for r in results}) >= 8, "the switching did not reach the inferences"
    calls = [entry[0] for entry in log]
    for code, i, out, t0, t1 in results:
        assert rel_err(out, references[code][i]) <= TOL, (code, i)
        # `code` was set by some switch that started before t1 and stayed until at least t0
        j = bisect.bisect_right(calls, t1) - 1
        ok = False
        while j >= 0:
            if log[j][2] == code:
                ok = j + 1 == len(log) or log[j + 1][1] >= t0
                break
            if j + 1 < len(log) and log[j + 1][1] < t0:
                break
            j -= 1
        assert ok, f"{code} was not active while the inference ran"


class _Blocking(Backend):
    """A backend whose super-net run blocks until released: a stand-in for a long inference."""

    verifies_artifacts = True

    @classmethod
    def artifacts(cls, manifest, codes, **options):
        return []

    def __init__(self, directory, manifest, codes, **options):
        super().__init__(directory, manifest, codes)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def run(self, code, batch):
        if code == "1111":
            self.entered.set()
            assert self.release.wait(10)
        assert not self.closed, "ran after close"
        return np.full((batch.shape[0], 10), int(code, 2), np.float32)

    def close(self):
        self.closed = True


@pytest.fixture()
def blocking_backend():
    register_backend("test-blocking", available=lambda: None, priority=-100)(_Blocking)
    yield
    _BACKENDS.pop("test-blocking")


def test_switch_never_waits_for_a_running_inference(model_dir, blocking_backend):
    sw = EngineSwitcher.open(model_dir, backend="test-blocking", warmup=False)
    eng = sw.engine
    x = np.zeros((1, 3, 32, 32), np.float32)
    got: list = []
    slow = threading.Thread(target=lambda: got.append(sw.infer_tagged(x)), daemon=True)
    slow.start()
    assert eng.entered.wait(5)
    t0 = time.perf_counter()
    for code in ("0000", "1010", "0101"):
        sw.switch(code)
    assert time.perf_counter() - t0 < 0.05  # microseconds in fact; no waiting on the blocked run
    assert sw.active == "0101"
    assert sw.infer(x)[0, 0] == 5  # other inferences proceed meanwhile, on the new code
    eng.release.set()
    slow.join(5)
    code, out = got[0]
    assert code == "1111" and out[0, 0] == 15  # the slow one finished on the code it began with
    sw.close()


def test_close_waits_for_inferences_in_flight(model_dir, blocking_backend):
    sw = EngineSwitcher.open(model_dir, backend="test-blocking", warmup=False)
    eng = sw.engine
    x = np.zeros((1, 3, 32, 32), np.float32)
    got: list = []
    slow = threading.Thread(target=lambda: got.append(sw.infer(x)), daemon=True)
    slow.start()
    assert eng.entered.wait(5)
    closer = threading.Thread(target=sw.close, daemon=True)
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive() and not eng.closed  # close is waiting for the running inference
    eng.release.set()
    closer.join(5)
    slow.join(5)
    assert eng.closed and got and got[0][0, 0] == 15
