"""``adn-edge doctor``: on this CPU machine (exit 2, a plain report), on every recorded
Jetson and desktop output (``tests/fixtures/jetson/``, ``tests/fixtures/tegrastats/``), and
``--full`` end to end on the TensorRT and CUDA test doubles (numbers from the doubles are
not measurements; only the plumbing and the verdicts are checked)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from adn_edge.backends.cuda import BindingReport, DeviceInfo
from adn_edge import doctor as doc
from adn_edge.platform import jetson, nvidia_smi
from tests._util import run_cli

REPO = Path(__file__).resolve().parents[2]
JETSON = REPO / "tests" / "fixtures" / "jetson"
TEGRASTATS = REPO / "tests" / "fixtures" / "tegrastats"


def files(pattern: str) -> list[Path]:
    return sorted(p for p in JETSON.rglob(pattern) if p.is_file())


def ids(p: Path) -> str:
    return f"{p.parent.name}/{p.name}"


# --------------------------------------------------------------------------- this machine


def test_doctor_on_this_machine_says_what_is_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["doctor"], capsys)
    assert code == 2 and "Traceback" not in out + err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("verdict: NOT READY for TensorRT") and "(exit 2)" in lines[-1]
    assert re.search(r"MISSING\s+TensorRT: not importable", out) and "fix:" in out
    assert re.search(r"MISSING\s+GPU", out) and "ONNX Runtime" in out
    report = json.loads((tmp_path / "adn-edge-doctor.json").read_text())
    assert report["exit_code"] == 2 and {c["key"] for c in report["checks"]} >= {"python", "tensorrt", "cuda", "gpu"}
    code, out, _ = run_cli(["doctor", "--full", "--json", "--no-report"], capsys)
    rep = json.loads(out)
    full = next(c for c in rep["checks"] if c["key"] == "full")
    assert code == 2 and full["status"] == "missing" and "not run: it needs" in full["summary"]


def test_doctor_subprocess_without_tensorrt_exits_2_without_a_traceback(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "tensorrt").mkdir(parents=True)
    (shadow / "tensorrt" / "__init__.py").write_text("raise ImportError('simulated: no TensorRT here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "adn_edge.cli.app", "doctor", "--full", "--no-report"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "simulated: no TensorRT here" in proc.stdout and proc.stdout.strip().splitlines()[-1].startswith("verdict:")


# --------------------------------------------------------------------------- every recorded output


@pytest.mark.parametrize("path", files("nv_tegra_release.txt") + files("_nv_tegra_release_first_lines/*.txt"),
                         ids=ids)
def test_platform_of_every_recorded_release(path: Path) -> None:
    rel = jetson.parse_nv_tegra_release(path.read_text())
    facts = doc.Facts(rel.version if rel else None, rel.release if rel else None, "file", None, None, None, "aarch64")
    check = doc.platform_check(facts, None)
    if rel is None:  # a desktop, or a GH200: aarch64 but no L4T
        assert "No such file" in path.read_text() and check.status == doc.INFO and "not a Jetson" in check.summary
        return
    major = rel.major
    assert check.summary.startswith(f"L4T R{rel.version} (JetPack {rel.release.jetpack}")  # type: ignore[union-attr]
    if major >= 36 and rel.version not in ("36.2.0", "36.3.0"):
        assert check.status == doc.OK and "TensorRT 10." in check.summary
    else:  # JetPack 4/5 (TensorRT 7-8): adn-edge needs 10
        assert check.status == doc.MISSING and "flash JetPack 6.1 or newer" in (check.fix or "")


@pytest.mark.parametrize("path", files("nvpmodel_*.txt"), ids=ids)
def test_power_mode_of_every_recorded_nvpmodel_output(path: Path) -> None:
    text = path.read_text()
    if "POWER_MODEL" in text and "NV Power Mode" not in text:  # nvpmodel.conf or `nvpmodel -p --verbose`
        models = jetson.parse_power_models(text)
        assert models and all(isinstance(k, int) for k in models)
        check = doc.power_mode_check(None, text)
        assert check.status == doc.INFO and check.data["modes"]
        return
    check = doc.power_mode_check(text, None)
    mode = re.search(r"NV Power Mode: (\S+)", text).group(1)  # type: ignore[union-attr]
    assert check.data["mode"] == mode and isinstance(check.data["id"], int)
    assert check.summary.startswith(f"{mode} (id {check.data['id']})")
    assert bool(check.data["errors"]) == ("NVPM ERROR" in text)


@pytest.mark.parametrize("path", files("jetson_clocks*.txt"), ids=ids)
def test_clocks_of_every_recorded_jetson_clocks_output(path: Path) -> None:
    text = path.read_text()
    check = doc.clocks_check(text, None)
    clocks = jetson.parse_jetson_clocks(text)
    assert clocks is not None
    if clocks.error:  # not root, sudo without a password, no GPU scaling
        assert check.status == doc.INFO and clocks.error in check.summary and clocks.pinned is None
    elif clocks.gpu is None:  # a table cut short: cannot tell
        assert check.status == doc.INFO and check.data["pinned"] is None and clocks.cpus
    else:  # every recorded board ran with jetson_clocks off
        assert check.status == doc.WARN and check.data["pinned"] is False and "sudo jetson_clocks" in (check.fix or "")
        assert check.data["gpu_max_mhz"] and len(clocks.cpus) == check.data["cpus"] >= 6
        pinned = re.sub(r"MinFreq=(\d+) MaxFreq=(\d+)", r"MinFreq=\2 MaxFreq=\2", text)
        assert doc.clocks_check(pinned, None).status == doc.OK


def test_clocks_fall_back_to_sysfs_when_the_tool_refuses() -> None:
    refused = (JETSON / "orin_nano_super_devkit_jp7.2.1_r39.2.1" / "jetson_clocks_show_nonroot_stdout.txt").read_text()
    check = doc.clocks_check(refused, True)
    assert check.status == doc.OK and check.data["source"] == "sysfs min/max frequencies"
    assert "as a root user" in check.data["error"]


@pytest.mark.parametrize("path", files("nvidia_smi*"), ids=ids)
def test_every_recorded_nvidia_smi_output(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".csv":
        rows = nvidia_smi.parse_query_csv(text)
        assert rows and all(isinstance(r["name"], str) and r["name"].startswith("NVIDIA") for r in rows)
        assert all(isinstance(r["memory.total"], float) for r in rows)
        return
    if path.name.startswith("nvidia_smi_L"):
        assert nvidia_smi.parse_list(text) == [(0, "Orin (nvgpu)", "[removed]")]
        return
    table = nvidia_smi.parse_table(text)
    if table is None:  # JetPack 5 (command not found), or not nvidia-smi output at all
        assert "command not found" in text or "go test" in text
        return
    assert len(table.gpus) == 1
    gpu = table.gpus[0]
    facts = doc.Facts(smi=table, machine="x86_64")
    check = doc.gpu_check([], facts)
    assert check.status == doc.MISSING and gpu.name in check.summary and "no CUDA binding" in check.summary
    if gpu.name == "Orin (nvgpu)":  # JetPack 6/7: every field N/A
        assert gpu.memory_total_mib is None and gpu.power_w is None and table.smi_version.startswith(("540", "595"))
    else:
        assert gpu.memory_total_mib and gpu.power_cap_w and table.cuda and table.driver
        assert table.mode_column == ("Driver-Model" if "WDDM" in text else "Persistence-M")


@pytest.mark.parametrize("path", sorted(TEGRASTATS.glob("*.txt")), ids=lambda p: p.name)
def test_rails_of_every_recorded_tegrastats_line(path: Path) -> None:
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rails = doc.rails_report(line)
        assert rails["ok"], (path.name, line)
        assert rails["module_w"] > 0 and rails["rails_w"]
        if "VDD_IN" in line or "POM_5V_IN" in line:
            assert rails["module_rail"] in ("VDD_IN", "POM_5V_IN") and not rails["module_summed"]
        else:  # AGX Orin: no module-input rail, the sum (NC channels left out)
            assert rails["module_summed"] and "NC" not in rails["module_rail"].split("+")
    assert doc.rails_report("garbage") == {"ok": False, "reason": "no RAM, CPU or power-rail fields"}


@pytest.mark.parametrize("path", files("*nsufficient*") + files("cuda_python_*"), ids=ids)
def test_every_recorded_cuda_start_failure_is_explained(path: Path) -> None:
    from adn_edge.backends.cuda import CUDA_ERROR_NAMES, DRIVER_TOO_OLD, start_hint

    report = jetson.parse_cuda_error(path.read_text())
    assert report is not None and report.code == 35
    name = report.name or CUDA_ERROR_NAMES[report.code]
    assert name in DRIVER_TOO_OLD and "newer CUDA than the driver" in start_hint("cuda-python", name)


# --------------------------------------------------------------------------- recorded boards, whole reports


def _probes(tmp_path: Path, folder: Path, tensorrt: str | None, bindings: list[BindingReport]) -> doc.Probes:
    """The doctor's view of a recorded board: its files in a tree, its outputs as commands."""
    root = tmp_path / "root"
    for name, rel in (("nv_tegra_release.txt", "etc/nv_tegra_release"), ("device_tree_model.txt", "proc/device-tree/model"),
                      ("cuda_version_json.txt", "usr/local/cuda/version.json"),
                      ("nvpmodel_conf_power_models.txt", "etc/nvpmodel.conf")):
        f = folder / name
        if f.is_file() and "No such file" not in f.read_text():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(f.read_text())
    commands = {}
    for name, argv in (("nvpmodel_q.txt", "nvpmodel -q"), ("jetson_clocks_show.txt", "jetson_clocks --show"),
                       ("nvidia_smi.txt", "nvidia-smi"), ("uname_a.txt", "uname -a"),
                       ("nvcc_version.txt", "nvcc --version"),
                       ("dpkg_query_nvidia_l4t_core.txt", "dpkg-query -W nvidia-l4t-core")):
        if (folder / name).is_file():
            commands[argv] = (folder / name).read_text()

    def run(argv: list[str]) -> str | None:
        return commands.get(" ".join(argv))

    def import_trt() -> types.ModuleType:
        if tensorrt is None:
            raise ModuleNotFoundError("No module named 'tensorrt'")
        return types.SimpleNamespace(__version__=tensorrt, __file__="/usr/lib/python3/dist-packages/tensorrt")  # type: ignore[return-value]

    def no_nvml() -> dict:
        raise ImportError("No module named 'pynvml'")

    uname = jetson.parse_uname(commands.get("uname -a"))
    return doc.Probes(root=root, run=run, run_any=run, which=lambda name: None, tensorrt=import_trt,
                      bindings=lambda: bindings, nvml=no_nvml, machine=uname.machine if uname else "aarch64")


ORIN_NANO = DeviceInfo("Orin (nvgpu)", 8, 7, 8, 7619 << 20)


def test_a_ready_jetson_7_2_board(tmp_path: Path) -> None:
    folder = JETSON / "orin_nano_super_devkit_jp7.2.1_r39.2.1"
    trt = jetson.parse_tensorrt_version((folder / "tensorrt_python_version.txt").read_text())
    bindings = [BindingReport("cuda-python", True, "13.2.0", True, ORIN_NANO), BindingReport("pycuda", False, None, False)]
    rep = doc.collect(_probes(tmp_path, folder, trt, bindings))
    checks = {c["key"]: c for c in rep["checks"]}
    assert rep["exit_code"] == 0 and rep["verdict"].startswith("verdict: READY: TensorRT 10.16.2.10 on Orin (nvgpu)")
    assert checks["platform"]["data"]["jetpack"] == "7.2" and checks["platform"]["data"]["cuda_toolkit"] == "13.2.2"
    assert checks["tensorrt"]["data"]["api"].startswith("10.x") and checks["tensorrt"]["status"] == "ok"
    assert checks["nvpmodel"]["summary"] == "25W (id 1) of 15W, 25W, MAXN_SUPER"
    assert checks["clocks"]["status"] == "warn" and checks["gpu"]["summary"].endswith("8 SMs, 7619 MiB")


def test_a_jetson_6_2_board_with_a_too_new_cuda_python(tmp_path: Path) -> None:
    """The recorded JetPack 6 failure: cuda-python newer than CUDA 12.6 cannot start
    (cudaErrorInsufficientDriver); without pycuda nothing starts and the fix is the pin."""
    folder = JETSON / "orin_nano_devkit_jp6.2.1_r36.4.4"
    (tmp_path / "root" / "usr/local/cuda").mkdir(parents=True)
    (tmp_path / "root" / "usr/local/cuda/version.json").write_text(
        (JETSON / "orin_nano_devkit_jp6.2.1_jetson_containers1558" / "cuda_version_json_partial.txt").read_text())
    from adn_edge.backends.cuda import start_hint

    bad = BindingReport("cuda-python", True, "13.0.1", False, None, "cuda-python cannot start CUDA ...",
                        "cudaErrorInsufficientDriver", start_hint("cuda-python", "cudaErrorInsufficientDriver"))
    rep = doc.collect(_probes(tmp_path, folder, "10.3.0", [bad, BindingReport("pycuda", False, None, False)]))
    checks = {c["key"]: c for c in rep["checks"]}
    assert rep["exit_code"] == 2 and "CUDA bindings" in rep["verdict"]
    assert checks["cuda"]["status"] == "missing" and "cudaErrorInsufficientDriver" in checks["cuda"]["summary"]
    assert checks["platform"]["data"]["cuda_toolkit"] == "12.6.11"
    assert doc.cuda_pin(doc.gather_facts(_probes(tmp_path, folder, None, []))) == "cuda-python==12.6.*"


def test_jetpack_5_boards_are_told_to_flash_jetpack_6(tmp_path: Path) -> None:
    folder = tmp_path / "jp5"
    folder.mkdir()
    (folder / "nv_tegra_release.txt").write_text(
        (JETSON / "_nv_tegra_release_first_lines" / "r35.3.1_jetson_containers.txt").read_text())
    rep = doc.collect(_probes(tmp_path, folder, "8.5.2", []))
    checks = {c["key"]: c for c in rep["checks"]}
    assert checks["platform"]["status"] == "missing" and "JetPack 5.1.1 ships TensorRT 8.5" in checks["platform"]["fix"]
    assert checks["tensorrt"]["status"] == "missing" and rep["exit_code"] == 2


def test_a_desktop_gets_the_wheel_for_its_driver(tmp_path: Path) -> None:
    """x86: the wheel and the cuda-python pin follow the CUDA the driver runs (nvidia-smi)."""
    folder = JETSON / "desktop_rtx3090"
    rep = doc.collect(_probes(tmp_path, folder, None, [BindingReport("cuda-python", False, None, False),
                                                       BindingReport("pycuda", False, None, False)]))
    checks = {c["key"]: c for c in rep["checks"]}
    assert "tensorrt-cu12" in checks["tensorrt"]["fix"] and "CUDA 12" in checks["tensorrt"]["fix"]
    assert "cuda-python>=12,<13" in checks["cuda"]["fix"]
    assert checks["platform"]["summary"] == "not a Jetson (x86_64); driver 550.120, CUDA 12.4"
    assert "NVIDIA GeForce RTX 3090" in checks["gpu"]["summary"]


def test_a_broken_probe_is_reported_not_raised(tmp_path: Path) -> None:
    p = _probes(tmp_path, JETSON / "desktop_rtx3090", None, [])

    def boom() -> list[BindingReport]:
        raise RuntimeError("probe exploded")

    p.bindings = boom
    rep = doc.collect(p)
    cuda = next(c for c in rep["checks"] if c["key"] == "cuda")
    assert cuda["status"] == "fail" and "probe exploded" in cuda["summary"] and rep["exit_code"] == 2


# --------------------------------------------------------------------------- --full on the doubles


@pytest.mark.parametrize("tag", ["10.3", "11.1"])
def test_full_runs_end_to_end_on_the_doubles(tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Export, fp32+fp16 builds, CUDA graphs off and on, comparison with ONNX Runtime: the
    whole --full path through the real builder and runner over the doubles."""
    from tests.runtime import _fake_tensorrt as fake

    fake.install(monkeypatch, tag)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["doctor", "--full", "--json", "--no-report", "--keep", tmp_path / "keep"], capsys)
    rep = json.loads(out)
    full = next(c for c in rep["checks"] if c["key"] == "full")
    assert code == 0 and full["status"] == "ok", (full, err)
    runs = full["data"]["runs"]
    assert {(r["precision"], r["cuda_graphs"]) for r in runs} == {(p, g) for p in ("fp32", "fp16") for g in (False, True)}
    assert all(r["rel_err"] <= doc.TOLERANCE[r["precision"]] for r in runs)
    assert rep["verdict"].startswith("verdict: READY") and "matched ONNX Runtime" in rep["verdict"]
    assert (tmp_path / "keep" / "embedded" / "manifest.json").is_file()


def test_verdicts() -> None:
    """Ready (0); something to install (2, even next to a failure); an end-to-end failure
    with everything installed (1)."""
    ok = doc.Check("gpu", "GPU", doc.OK, "x", data={"name": "Orin (nvgpu)"})
    trt = doc.Check("tensorrt", "TensorRT", doc.OK, "x", data={"version": "10.3.0"})
    assert doc.verdict([ok, trt], False) == (0, "verdict: READY: TensorRT 10.3.0 on Orin (nvgpu); run `adn-edge "
                                                 "doctor --full` to build and run engines.")
    broken = doc.Check("full", "End to end (--full)", doc.FAIL, "fp16 over tolerance", setup=False)
    code, line = doc.verdict([ok, trt, broken], True)
    assert code == 1 and line.startswith("verdict: FAILED: End to end (--full): fp16 over tolerance")
    missing = doc.Check("cuda", "CUDA bindings", doc.MISSING, "none")
    code, line = doc.verdict([ok, trt, missing, broken], True)
    assert code == 2 and "CUDA bindings" in line and "(exit 2)" in line


def test_a_gh200_server_is_aarch64_but_not_a_jetson(tmp_path: Path) -> None:
    rep = doc.collect(_probes(tmp_path, JETSON / "server_gh200_aarch64", None, []))
    checks = {c["key"]: c for c in rep["checks"]}
    assert checks["platform"]["summary"] == "aarch64, but not a Jetson (no L4T release); driver 570.124.06, CUDA 12.8"
    assert "nvpmodel" not in checks and "tensorrt-cu12" in checks["tensorrt"]["fix"]
