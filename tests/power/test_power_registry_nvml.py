"""Source selection (--power / --device), the no-op source, and NVML through a fake pynvml."""

from __future__ import annotations

import sys
import time
import types

import pytest

from adn_edge.errors import AdnError
from adn_edge.power import PowerSourceError, power_source, resolve_power
from adn_edge.power.none import NoPowerSource
from adn_edge.power.nvml import NvmlSource


@pytest.mark.parametrize("device,expected", [("orin", "tegrastats"), ("cuda", "nvml"), ("cpu", "none"),
                                             ("ORIN", "tegrastats")])
def test_auto_follows_the_device(device, expected):
    assert resolve_power("auto", device) == expected


@pytest.mark.parametrize("power", ["tegrastats", "nvml", "none"])
@pytest.mark.parametrize("device", ["orin", "cuda", "cpu"])
def test_explicit_choice_overrides_the_device(power, device):
    assert resolve_power(power, device) == power


def test_bad_choices_name_the_valid_ones():
    with pytest.raises(AdnError, match="auto, tegrastats, nvml, none"):
        resolve_power("watts", "cpu")
    with pytest.raises(AdnError, match="orin, cuda, cpu"):
        resolve_power("auto", "tpu")
    with pytest.raises(AdnError, match="resolve_power"):
        power_source("auto")
    with pytest.raises(AdnError):
        power_source("bogus")


def test_none_source_measures_nothing_and_says_so():
    src = power_source("none", interval_ms=50)
    assert isinstance(src, NoPowerSource) and not src.measures_energy
    with src:
        t0 = src.now()
        assert src.window(t0, t0 + 1) is None
        assert src.wait_until(t0 + 100)
    assert src.samples == []
    d = src.describe()
    assert d["source"] == "none" and d["rail"] is None and d["measured"] is False
    assert "not measured" in d["note"]


def test_bad_interval_is_rejected():
    with pytest.raises(AdnError, match="interval"):
        NvmlSource(interval_ms=0, pynvml=FakeNvml())


# -- NVML ------------------------------------------------------------------------------

class NVMLError(Exception):
    pass


class FakeNvml(types.ModuleType):
    """A stand-in for the pynvml module: a GPU drawing a constant ``watts``."""

    def __init__(self, watts=100.0, counter=True, gpus=1, init_fails=False, fail_after=None):
        super().__init__("pynvml")
        self.watts, self.counter, self.gpus, self.init_fails = watts, counter, gpus, init_fails
        self.fail_after, self.calls, self.t_start, self.inits, self.shutdowns = fail_after, 0, time.perf_counter(), 0, 0
        self.NVMLError = NVMLError

    def nvmlInit(self):
        if self.init_fails:
            raise NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA Fake 100"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.counter:
            raise NVMLError("Not Supported")
        self._tick()
        return int(self.watts * (time.perf_counter() - self.t_start) * 1000)

    def nvmlDeviceGetPowerUsage(self, h):
        self._tick()
        return int(self.watts * 1000)

    def _tick(self):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise NVMLError("GPU is lost")


def test_pynvml_missing_is_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(AdnError, match="nvidia-ml-py"):
        power_source("nvml")


def test_no_driver_is_a_clear_error():
    with pytest.raises(AdnError, match="nvidia-smi"):
        NvmlSource(pynvml=FakeNvml(init_fails=True))


def test_missing_gpu_index():
    fake = FakeNvml(gpus=1)
    with pytest.raises(AdnError, match="GPU index 3"):
        NvmlSource(index=3, pynvml=fake)
    assert fake.shutdowns == 1


def test_energy_counter_is_used_when_supported(monkeypatch):
    fake = FakeNvml(watts=100.0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # injected as the real module would be
    src = power_source("nvml", interval_ms=20)
    assert src.use_counter
    with src:
        time.sleep(0.1)
        t0 = src.now()
        time.sleep(0.5)
        t1 = src.now()
        w = src.window(t0, t1)
    assert w.method == "energy-counter"
    assert w.mean_w == pytest.approx(100.0, rel=0.01)
    assert w.samples >= 15
    d = src.describe()
    assert d["rail"] == "nvml_board" and d["method"] == "energy-counter" and d["gpu"] == "NVIDIA Fake 100"
    assert fake.shutdowns == 1


def test_power_sampling_when_the_counter_is_unsupported():
    src = NvmlSource(interval_ms=20, pynvml=FakeNvml(watts=75.0, counter=False))
    assert not src.use_counter
    with src:
        t0 = src.now()
        time.sleep(0.4)
        w = src.window(t0, src.now())
    assert w.method == "trapezoid" and w.mean_w == pytest.approx(75.0)
    assert src.describe()["method"] == "power-sampling"


def test_a_failure_while_sampling_is_reported():
    src = NvmlSource(interval_ms=10, pynvml=FakeNvml(counter=False, fail_after=5))
    with pytest.raises(PowerSourceError, match="GPU is lost"):
        with src:
            time.sleep(0.3)


# -- plausibility ------------------------------------------------------------------------

class GlitchyNvml(FakeNvml):
    """A fake GPU whose power reading is absurd on the calls listed in ``bad_calls``
    (``every``: on every call from the ``every``-th on)."""

    def __init__(self, bad_mw, bad_calls=(), every=None, **kw):
        super().__init__(counter=False, **kw)
        self.bad_mw, self.bad_calls, self.every = bad_mw, set(bad_calls), every

    def nvmlDeviceGetPowerUsage(self, h):
        good = super().nvmlDeviceGetPowerUsage(h)
        if self.calls in self.bad_calls or (self.every is not None and self.calls >= self.every):
            return self.bad_mw
        return good


def test_an_absurd_nvml_reading_is_dropped_and_counted():
    src = NvmlSource(interval_ms=10, pynvml=GlitchyNvml(bad_mw=10**12, bad_calls={8}))
    with src:
        time.sleep(0.5)
    assert src.samples and all(s.module_w == pytest.approx(100.0) for s in src.samples)
    d = src.describe()
    assert d["rejected_samples"] == 1 and "W" in d["rejections"][0]


def test_negative_nvml_power_is_dropped():
    src = NvmlSource(interval_ms=10, pynvml=GlitchyNvml(bad_mw=-5000, bad_calls={5, 9}))
    with src:
        time.sleep(0.4)
    assert all(s.module_w >= 0 for s in src.samples) and src.describe()["rejected_samples"] == 2


def test_an_nvml_meter_gone_mad_fails_the_run():
    src = NvmlSource(interval_ms=10, pynvml=GlitchyNvml(bad_mw=10**12, every=4))
    with pytest.raises(PowerSourceError, match=r"implausible or over-long readings out of \d+"):
        with src:
            time.sleep(0.4)
            src.window(src.samples[0].t, src.now())


class BackwardsCounter(FakeNvml):
    """An energy counter that jumps back once (a driver reset mid-run)."""

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        value = super().nvmlDeviceGetTotalEnergyConsumption(h)
        return value - 10**9 if self.calls == 10 else value


def test_an_energy_counter_running_backwards_is_dropped():
    src = NvmlSource(interval_ms=10, pynvml=BackwardsCounter(watts=100.0))
    with src:
        time.sleep(0.4)
    assert src.describe()["rejected_samples"] >= 1
    assert all(0 <= s.module_w < 1000 for s in src.samples)
