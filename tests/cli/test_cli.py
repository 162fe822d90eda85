"""The command line: results, JSON, and every bad-input path exits 2 with a paragraph."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from adn_edge.models import create_model
from tests._util import random_state_dict, run_cli


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    m = create_model("resnet_tiny")
    torch.save(random_state_dict(m, seed=5), d / "tiny.pth")
    return d / "tiny.pth"


def test_subnets_json_matches_official_readme_within_3_percent(capsys) -> None:
    code, out, _ = run_cli(["subnets", "--arch", "resnet50", "--json"], capsys)
    assert code == 0
    rows = {r["skip_cfg"]: r for r in json.loads(out)["subnets"]}
    readme = {"FFFF": 4.11, "TFFF": 3.90, "TTFF": 3.46, "TTTF": 2.80, "TTTT": 2.58}
    for cfg, g in readme.items():
        assert rows[cfg]["gmacs"] == pytest.approx(g, rel=0.03), cfg
    assert len(rows) == 16 and json.loads(out)["subnets"][0]["code"] == "1111"


def test_export_info_round_trip(tiny_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    code, stdout, _ = run_cli(["export", tiny_ckpt, "--arch", "resnet_tiny", "--subnet", "1010", "--subnet", "TTTT",
                               "--out", out, "--json"], capsys)
    assert code == 0
    res = json.loads(stdout)
    assert [s["code"] for s in res["subnets"]] == ["1010", "0000"]
    assert (out / "resnet_tiny_1010.onnx").exists() and (out / "manifest.json").exists()
    code, stdout, _ = run_cli(["info", out, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["arch"] == "resnet_tiny"
    code, stdout, _ = run_cli(["info", out / "resnet_tiny_1010.onnx", "--json"], capsys)
    assert json.loads(stdout)["metadata"]["adn.skip_cfg"] == "FTFT"
    code, stdout, _ = run_cli(["info", tiny_ckpt, "--json"], capsys)
    assert json.loads(stdout)["arch"] == "resnet_tiny"


def bad(args, capsys, *needles):
    code, out, err = run_cli(args, capsys)
    assert code == 2, (code, err)
    assert "Traceback" not in err and err.startswith("error: ")
    for n in needles:
        assert n in err.replace("\n", " "), (n, err)
    return err


def test_unknown_arch_lists_known(capsys) -> None:
    bad(["subnets", "--arch", "resnet51"], capsys, "resnet51", "resnet50", "mobilenet_v2")


def test_bad_code_names_s_and_examples(tiny_ckpt, tmp_path, capsys) -> None:
    bad(["export", tiny_ckpt, "--arch", "resnet_tiny", "--subnet", "10101", "--out", tmp_path], capsys,
        "4 skippable stages", "'1010'", "'TFFF'")
    assert not list(tmp_path.glob("*.onnx"))


def test_checkpoint_of_another_arch_or_classes(tiny_ckpt, tmp_path, capsys) -> None:
    bad(["export", tiny_ckpt, "--arch", "resnet_small", "--out", tmp_path], capsys, "does not fit", "resnet_small")
    bad(["export", tiny_ckpt, "--arch", "resnet_tiny", "--num-classes", "100", "--out", tmp_path], capsys,
        "10 classes")


def test_missing_truncated_and_code_executing_files(tiny_ckpt, tmp_path, capsys) -> None:
    bad(["export", tmp_path / "none.pth", "--arch", "resnet_tiny"], capsys, "does not exist")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny_ckpt.read_bytes()[:1000])
    bad(["export", cut, "--arch", "resnet_tiny", "--out", tmp_path / "o"], capsys, "truncated")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save(Evil(), tmp_path / "evil.pth")
    bad(["export", tmp_path / "evil.pth", "--arch", "resnet_tiny", "--out", tmp_path / "o"], capsys,
        "code execution", "safetensors")


def test_output_dir_not_writable(tiny_ckpt, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad(["export", tiny_ckpt, "--arch", "resnet_tiny", "--out", blocker], capsys, "not a directory")
    bad(["export", tiny_ckpt, "--arch", "resnet_tiny", "--out", blocker / "sub"], capsys, "cannot be created")


def test_info_on_garbage(tmp_path, capsys) -> None:
    (tmp_path / "x.onnx").write_bytes(b"not onnx at all")
    bad(["info", tmp_path / "x.onnx"], capsys, "cannot be read as ONNX")
    bad(["info", tmp_path / "missing"], capsys, "does not exist")
    bad(["info", tmp_path], capsys, "manifest.json")


def test_console_script_exit_codes() -> None:
    """The installed entry point: usage errors and bad input exit 2, without a traceback."""
    r = subprocess.run([sys.executable, "-m", "adn_edge.cli.app", "subnets", "--arch", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Unknown architecture" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "adn_edge.cli.app", "subnets", "--bogus"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2


def test_export_segments_beside_the_subnets(tmp_path, capsys) -> None:
    """--segments writes the segment graphs after the sub-networks, into the same manifest,
    with --fp16, --static-batch and --input-size applied to them too."""
    from adn_edge.modeldir import manifest
    from adn_edge.fileio import sha256_file

    out = tmp_path / "m"
    code, stdout, err = run_cli(["export", "--random-init", "--arch", "resnet_tiny", "--subnet", "1010", "--segments",
                                 "--fp16", "--static-batch", "2", "--input-size", "40", "--out", out, "--json"], capsys)
    assert code == 0, err
    seg = json.loads(stdout)["segments"]
    assert seg["count"] == 4 and seg["parity"]["rel_err_max"] <= seg["parity"]["tolerance"]
    assert seg["parity_fp16"]["rel_err_max"] <= seg["parity_fp16"]["tolerance"]
    m = manifest.load(out)
    assert list(m["subnets"]) == ["1010"]  # the sub-network's entry survived the segments' manifest save
    assert len(m["segments"]["subnets"]) == 16
    for k, (part, rec) in enumerate(zip(seg["parts"], m["segments"]["parts"], strict=True)):
        for key, variant in (("files", ""), ("files_fp16", ".fp16")):
            for kind in ("full", "skip"):
                assert part[key][kind] == rec[key][kind]["path"] == f"resnet_tiny_seg{k}_{kind}{variant}.onnx"
                assert sha256_file(out / rec[key][kind]["path"]) == rec[key][kind]["sha256"]
    assert m["segments"]["parts"][0]["input_shape"] == [2, 3, 40, 40]
    import onnx

    graph = onnx.load(str(out / "resnet_tiny_seg0_skip.fp16.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 40, 40]  # in the twins too


def test_export_segments_refuses_mixed_recalibration(tiny_ckpt, tmp_path, capsys) -> None:
    bad(["export", "--random-init", "--arch", "resnet_tiny", "--correction-threshold", "0.1",
         "--out", tmp_path / "r"], capsys, "apply to corrected segment graphs only", "--segments --recalibrate")
    bad(["export", "--random-init", "--arch", "resnet_tiny", "--segments", "--correction-threshold", "0.1",
         "--out", tmp_path / "r"], capsys, "recalibrated segments only", "--recalibrate DATA")
    assert not (tmp_path / "r").exists()  # refused before the directory was even created
    # A directory of recalibrated graphs: segments (and this export's sub-networks) stay out of it.
    from adn_edge.export import ExportOptions, export

    d = tmp_path / "recal"
    export(create_model("resnet_tiny").eval(), d, ["1111"],
           options=ExportOptions(recalibration=[torch.randn(8, 3, 32, 32)], recalibration_source="builtin"))
    before = sorted(p.name for p in d.iterdir()), (d / "manifest.json").read_bytes()
    bad(["export", tiny_ckpt, "--arch", "resnet_tiny", "--subnet", "0000", "--segments", "--out", d], capsys,
        "BatchNorm recalibration (data: 'builtin')", "another directory")
    assert (sorted(p.name for p in d.iterdir()), (d / "manifest.json").read_bytes()) == before


def test_one_error_hierarchy():
    """Input problems exit 2, explained failures exit 1; the CLI catches their common base."""
    from adn_edge.errors import AdnError, AdnFailure, AdnProblem, BuildFailure, ParityError, PowerSourceError

    for cls in (BuildFailure, ParityError, PowerSourceError):
        assert issubclass(cls, AdnFailure) and not issubclass(cls, AdnError) and cls.exit_code == 1
    assert issubclass(AdnError, AdnProblem) and AdnError.exit_code == 2
    e = PowerSourceError("tegrastats died.", "Check the board.")
    assert e.paragraph() == "tegrastats died. Check the board." and str(e) == e.paragraph()


# -- bounds on numbers and --json errors (issue 13) ----------------------------------------

@pytest.mark.parametrize("flag", ["--duration", "--warmup-seconds", "--idle-seconds", "--interval-ms"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_bench_refuses_non_finite_or_negative_seconds(tmp_path, capsys, flag, value) -> None:
    bad(["bench", tmp_path, "--device", "cpu", flag, value], capsys, flag)


def test_threads_beyond_the_machine_exit_2(tmp_path, capsys) -> None:
    for args in (["bench", tmp_path, "--device", "cpu"], ["train", "--out", tmp_path / "t"],
                 ["eval", tmp_path / "none.pth", "--data", "builtin"]):
        bad([*args, "--threads", "100000"], capsys, "--threads", "100000", str(os.cpu_count()))
        bad([*args, "--threads", "0"], capsys, "--threads")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("args,needle", [(["--lr", "nan"], "--lr"), (["--alpha", "inf"], "--alpha"),
                                         (["--milestones", "0.5,nan"], "--milestones"),
                                         (["--clip-grad", "-inf"], "--clip-grad")])
def test_train_refuses_non_finite_numbers(tmp_path, capsys, args, needle) -> None:
    bad(["train", "--out", tmp_path / "t", *args], capsys, needle)
    assert not (tmp_path / "t").exists()


def test_backend_options_refuse_non_finite_numbers(tmp_path, capsys) -> None:
    bad(["bench", tmp_path, "--device", "cpu", "-O", "max_batch=nan"], capsys, "max_batch=nan")


def _entry(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adn_edge.cli.app", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _json_error(r: subprocess.CompletedProcess) -> dict:
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON literal {c}"))
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "hint", "exit_code", "type"}, doc
    assert doc["error"]["exit_code"] == r.returncode
    assert r.stderr.startswith("error: ") or "Error" in r.stderr  # the human paragraph stays on stderr
    return doc["error"]


def test_json_errors_bad_input_exit_2() -> None:
    r = _entry("subnets", "--arch", "resnet51", "--json")
    assert r.returncode == 2, r.stderr
    err = _json_error(r)
    assert err["type"] == "AdnError" and "resnet51" in err["message"] and err["hint"]
    assert "resnet51" in r.stderr and "Traceback" not in r.stderr


def test_json_errors_usage_exit_2() -> None:
    r = _entry("subnets", "--json", "--bogus")
    assert r.returncode == 2
    err = _json_error(r)
    assert "--bogus" in err["message"] and err["hint"] is None


def test_json_errors_failure_exit_1(tmp_path) -> None:
    """An explained failure (tegrastats dies before its first line) is exit 1 and JSON."""
    from adn_edge.export import export
    from adn_edge.models.random_weights import randomize
    from tests.power.test_tegrastats_sampler import FAKE_TEGRASTATS

    export(randomize(create_model("resnet_tiny"), input_size=32), tmp_path / "m", ["1111"])
    exe = tmp_path / "bin" / "tegrastats"
    exe.parent.mkdir()
    exe.write_text(FAKE_TEGRASTATS.replace("{python}", sys.executable))
    exe.chmod(0o755)
    (tmp_path / "lines.txt").write_text("x\n")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}", "FAKE_TEGRASTATS_EXIT_AFTER": "0",
           "FAKE_TEGRASTATS_LINES": str(tmp_path / "lines.txt")}
    r = _entry("bench", str(tmp_path / "m"), "--device", "cpu", "--power", "tegrastats", "--json", env=env)
    assert r.returncode == 1, r.stderr
    err = _json_error(r)
    assert err["type"] == "PowerSourceError" and "before printing a reading" in err["message"]


def test_without_json_errors_stay_off_stdout() -> None:
    r = _entry("subnets", "--arch", "resnet51")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: ")


def test_info_and_checkpoints_refuse_a_fifo_instead_of_hanging(tmp_path):
    """`info`/`export` read a FIFO until a writer came (forever, from a robot's view)."""
    import os
    import subprocess
    import sys

    for name in ("m.onnx", "c.pth"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        proc = subprocess.run([sys.executable, "-m", "adn_edge.cli.app", "info", str(fifo)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "not a regular file" in " ".join(proc.stderr.split())
