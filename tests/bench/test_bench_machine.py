"""Machine state from fake Jetson/CPU file trees, fake commands and a fake pynvml."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from adn_edge.bench import machine as m

NVPMODEL_Q = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
CLOCKS_ON = """SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
cpu2: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1
GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
NV Power Mode: MAXN
"""
CLOCKS_OFF = CLOCKS_ON.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000")


def fake_run(outputs):
    calls = []

    def run(argv):
        calls.append(list(argv))
        return outputs.get(argv[0])

    run.calls = calls
    return run


def jetson_tree(root, *, cpu_min=729600, cpu_max=2201600, gpu=(306000000, 1300500000)):
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n")
    (root / "etc/nvpmodel.conf").write_text("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=7W >\n")
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0001 fmode:quiet\n")
    for i in range(2):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(f"{cpu_min}\n")
        (d / "scaling_max_freq").write_text(f"{cpu_max}\n")
        (d / "scaling_governor").write_text("schedutil\n")
    g = root / "sys/class/devfreq/17000000.gpu"
    g.mkdir(parents=True)
    (g / "min_freq").write_text(f"{gpu[0]}\n")
    (g / "max_freq").write_text(f"{gpu[1]}\n")
    (root / "proc/cpuinfo").write_text("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n\n")
    return root


def test_parsers():
    assert m.parse_nvpmodel_query(NVPMODEL_Q) == ("MAXN", 0)
    assert m.parse_nvpmodel_query("NV Power Mode: 15W\n") == ("15W", None)
    assert m.parse_nvpmodel_query("garbage") == (None, None)
    assert m.parse_l4t("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref") == "35.4.1"
    assert m.parse_l4t("# R32 (release), REVISION: 7.1, GCID: 29818004") == "32.7.1"
    assert m.parse_l4t("nonsense") is None
    assert m.jetpack_version("36.4.3") == "6.2" and m.jetpack_version("32.7.1") == "4.6.x"
    assert m.jetpack_version("39.2.1") == "7.2" and m.jetpack_version("99.1") is None
    assert m.parse_jetson_clocks_show(CLOCKS_ON) is True  # the offline core is ignored
    assert m.parse_jetson_clocks_show(CLOCKS_OFF) is False
    assert m.parse_jetson_clocks_show("") is None
    # the --verbose form puts the mode inside a log line (an anchored pattern misses it)
    assert m.parse_nvpmodel_query("NVPM VERB: Config file: /etc/nvpmodel.conf\n"
                                  "NVPM VERB: Current mode: NV Power Mode: 25W\n1\n") == ("25W", 1)


def test_jetson_state_from_commands(tmp_path):
    run = fake_run({"nvpmodel": NVPMODEL_Q, "jetson_clocks": CLOCKS_ON})
    s = m.jetson_state(jetson_tree(tmp_path), run)
    assert s["board"] == "NVIDIA Jetson Orin Nano Developer Kit" and s["is_jetson"]
    assert s["l4t"] == "36.4.3" and s["jetpack"] == "6.2"
    assert (s["nvpmodel"], s["nvpmodel_id"], s["nvpmodel_source"]) == ("MAXN", 0, "nvpmodel -q")
    assert s["jetson_clocks"] is True and s["jetson_clocks_source"] == "jetson_clocks --show"
    assert ["jetson_clocks", "--show"] in run.calls  # never the clock-changing form
    assert all(c[0] != "jetson_clocks" or c[1:] == ["--show"] for c in run.calls)


def test_jetson_state_falls_back_to_files_without_root(tmp_path):
    s = m.jetson_state(jetson_tree(tmp_path), fake_run({}))
    assert (s["nvpmodel"], s["nvpmodel_id"]) == ("7W", 1)
    assert s["jetson_clocks"] is False and s["jetson_clocks_source"] == "sysfs min/max frequencies"


def test_sysfs_says_on_when_min_equals_max(tmp_path):
    root = jetson_tree(tmp_path, cpu_min=2201600, cpu_max=2201600, gpu=(1300500000, 1300500000))
    assert m.jetson_clocks_from_sysfs(root) is True


def test_machine_state_orin(tmp_path):
    st = m.machine_state("orin", root=jetson_tree(tmp_path), run=fake_run({"nvpmodel": NVPMODEL_Q}), threads=4)
    assert st["kind"] == "orin" and st["name"].startswith("NVIDIA Jetson Orin Nano") and st["power_mode"] == "MAXN"
    assert st["cpu"]["model"].startswith("Arm CPU") and st["cpu"]["threads"] == 4
    assert st["software"]["adn_edge"]


def test_nothing_available_means_nones_not_crashes(tmp_path):
    s = m.jetson_state(tmp_path, fake_run({}))
    assert s["board"] is None and s["l4t"] is None and s["nvpmodel"] is None and s["jetson_clocks"] is None

    def exploding(argv):
        raise RuntimeError("no")

    st = m.machine_state("orin", root=tmp_path, run=exploding)
    assert st["kind"] == "orin" and "name" in st and "power_mode" in st


def test_cpu_state(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n"
        "processor\t: 2\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 1\n\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("200000 100000\n")
    d = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    d.mkdir(parents=True)
    (d / "scaling_governor").write_text("performance\n")
    s = m.cpu_state(tmp_path, threads=2)
    assert s["model"] == "AMD EPYC 7B13" and s["physical_cores"] == 2 and s["cgroup_quota_cpus"] == 2.0
    assert s["governor"] == "performance" and s["threads"] == 2 and s["logical_cpus"] >= 1
    st = m.machine_state("cpu", root=tmp_path, run=fake_run({}))
    assert st["name"] == "AMD EPYC 7B13" and st["power_mode"] == "performance"


def test_cgroup_without_quota(tmp_path):
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    assert m.cgroup_cpu_quota(tmp_path) is None


def fake_pynvml():
    nv = types.ModuleType("pynvml")
    nv.NVML_CLOCK_GRAPHICS, nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM = 0, 1, 2
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    nv.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    nv.nvmlSystemGetCudaDriverVersion = lambda: 12040
    nv.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    nv.nvmlDeviceGetClockInfo = lambda h, c: {0: 1980, 1: 1980, 2: 2619}[c]
    nv.nvmlDeviceGetMaxClockInfo = lambda h, c: {0: 1980, 1: 1980, 2: 2619}[c]
    nv.nvmlDeviceGetPowerManagementLimit = lambda h: 700000
    nv.nvmlDeviceGetPerformanceState = lambda h: 0

    def unsupported(h):
        raise RuntimeError("Not Supported")

    nv.nvmlDeviceGetPersistenceMode = unsupported
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * (1 << 30))
    return nv


def test_cuda_state_with_fake_pynvml():
    g = m.cuda_state(0, pynvml=fake_pynvml(), run=fake_run({}))
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["driver"] == "550.54.15" and g["cuda_driver"] == "12.4"
    assert g["compute_capability"] == "9.0" and g["clocks_mhz"]["sm"] == 1980 and g["power_limit_w"] == 700.0
    assert g["pstate"] == "P0" and g["persistence_mode"] is None and g["memory_total_mib"] == 80 * 1024
    st = m.machine_state("cuda", pynvml=fake_pynvml(), run=fake_run({}))
    assert st["name"] == "NVIDIA H100 80GB HBM3" and st["power_mode"] == "700 W limit"


def test_cuda_state_falls_back_to_nvidia_smi(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)
    run = fake_run({"nvidia-smi": "NVIDIA H100 80GB HBM3, 550.54.15, 1980, 1980, 2619, 2619, 700.00, P0\n"})
    g = m.cuda_state(0, run=run)
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["power_limit_w"] == 700.0 and g["source"] == "nvidia-smi"
    g = m.cuda_state(0, run=fake_run({}))
    assert g["name"] is None and "error" in g


def test_default_runner_handles_missing_and_failing_commands():
    assert m.run_command(["definitely-not-a-command-xyz"]) is None
    assert m.run_command(["false"]) is None
    assert m.run_command(["echo", "hi"]) == "hi\n"
    assert m.run_command([]) is None


@pytest.mark.parametrize("kind", ["cpu", "cuda", "orin"])
def test_machine_state_on_this_machine_never_raises(kind):
    st = m.machine_state(kind)
    assert st["kind"] == kind and {"name", "power_mode"} <= set(st)


# ------------------------------------------------------------------ every recorded Jetson


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "jetson"


def recorded(pattern):
    return sorted(p for p in FIXTURES.rglob(pattern) if p.is_file())


def board(tmp_path, folder, extra=None):
    """A file tree and command outputs as the recorded board printed them."""
    (tmp_path / "etc").mkdir()
    rel = folder / "nv_tegra_release.txt"
    if rel.is_file() and "No such file" not in rel.read_text():
        (tmp_path / "etc/nv_tegra_release").write_text(rel.read_text())
    outputs = {}
    for name, cmd in (("nvpmodel_q.txt", "nvpmodel"), ("nvpmodel_q_verbose.txt", "nvpmodel"),
                      ("jetson_clocks_show.txt", "jetson_clocks"), ("dpkg_query_nvidia_l4t_core.txt", "dpkg-query")):
        f = folder / name
        if f.is_file():
            outputs[cmd] = f.read_text()
    outputs.update(extra or {})
    return fake_run(outputs)


@pytest.mark.parametrize("folder", sorted({p.parent for p in recorded("nv_tegra_release.txt")}
                                          | {p.parent for p in recorded("nvpmodel_q*.txt")}
                                          | {p.parent for p in recorded("jetson_clocks_show*.txt")}),
                         ids=lambda p: p.name)
def test_machine_record_of_every_recorded_board(tmp_path, folder):
    """The bench's machine-state record reads every recorded board: L4T and JetPack from
    the release file (or nvidia-l4t-core), the power mode also from --verbose output, and
    jetson_clocks from its --show table (off on every recorded board)."""
    run = board(tmp_path, folder)
    s = m.jetson_state(tmp_path, run)
    release = folder / "nv_tegra_release.txt"
    if release.is_file() and "No such file" not in release.read_text():
        assert s["l4t"] and s["l4t"].split(".")[0] in {"32", "36", "39"} and s["jetpack"]
        assert s["is_jetson"]
    elif (folder / "nv_tegra_release.txt").is_file():
        assert s["l4t"] is None and not s["is_jetson"]  # a desktop or a GH200 server: no L4T
    for name in ("nvpmodel_q.txt", "nvpmodel_q_verbose.txt"):
        if (folder / name).is_file():
            assert s["nvpmodel"] is not None and isinstance(s["nvpmodel_id"], int), name
    show = folder / "jetson_clocks_show.txt"
    if show.is_file():
        assert s["jetson_clocks"] is False and s["jetson_clocks_source"] == "jetson_clocks --show"


def test_machine_record_reads_l4t_from_the_package_when_the_file_is_missing(tmp_path):
    pkg = (FIXTURES / "orin_nano_devkit_jp7.2_r39.2.0_misdetected" / "dpkg_query_nvidia_l4t_core.txt").read_text()
    s = m.jetson_state(tmp_path, fake_run({"dpkg-query": pkg}))
    assert (s["l4t"], s["jetpack"]) == ("39.2.0", "7.2")


def test_pinned_clocks_are_recognised_in_every_recorded_format():
    """No recorded board had jetson_clocks on; pinning min to max in each recorded table
    (R35, R36 with Online=1, R39 without) must read as on."""
    import re

    for path in recorded("jetson_clocks_show*.txt"):
        text = path.read_text()
        if "GPU MinFreq" not in text:
            continue
        pinned = re.sub(r"MinFreq=(\d+) MaxFreq=(\d+)", r"MinFreq=\2 MaxFreq=\2", text)
        assert m.parse_jetson_clocks_show(text) is False, path
        assert m.parse_jetson_clocks_show(pinned) is True, path


def test_nvidia_smi_query_is_read_with_the_shared_csv_parser():
    run = fake_run({"nvidia-smi": "NVIDIA L4, 570.144, [N/A], 2040, 405, 6251, 72.00, P8\n"})
    g = m.cuda_state(0, pynvml=types.ModuleType("broken"), run=run)
    assert g["name"] == "NVIDIA L4" and g["driver"] == "570.144"  # a version, not the number 570.144
    assert g["clocks_mhz"]["sm"] is None and g["max_clocks_mhz"]["sm"] == 2040 and g["power_limit_w"] == 72.0
