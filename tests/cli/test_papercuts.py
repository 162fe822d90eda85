"""Command-line papercuts: --version, help texts, piped tables, info wording, GMACs, train
progress when piped, build --calib builtin."""

from __future__ import annotations

import json
import re

import pytest
import torch

from adn_edge import subnet
from adn_edge.cli import output
from adn_edge.models import create_model
from tests._util import random_state_dict, run_cli

COMMANDS = ("subnets", "export", "build", "bench", "eval", "train", "info", "demo", "quantize", "doctor")
OTHER_PROGRAMS = {"--nproc_per_node", "--subpath-alpha", "--subpath-temp", "--fpn", "--skip-cfg"}
"""Options of other programs that help texts cite: torchrun's, the official training script's."""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """Three sub-networks of resnet_tiny, exported out of GMACs order."""
    from adn_edge.export import export
    from adn_edge.models.random_weights import randomize

    d = tmp_path_factory.mktemp("pc") / "m"
    export(randomize(create_model("resnet_tiny"), input_size=32), d, ["0000", "1010", "1111"])
    return d


def click_commands() -> dict:
    import typer

    from adn_edge.cli.app import app

    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def options_of(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("--")}


# 1 ------------------------------------------------------------------- --version

def test_version_alone_prints_it_and_exits_0(capsys) -> None:
    from adn_edge import __version__

    code, out, err = run_cli(["--version"], capsys)
    assert (code, out.strip()) == (0, __version__), err
    code, out, _ = run_cli(["--version", "subnets"], capsys)
    assert (code, out.strip()) == (0, __version__)


def test_no_arguments_still_print_the_command_list(capsys) -> None:
    code, out, _ = run_cli([], capsys)
    assert code == 2 and "Commands" in out and "subnets" in out


# 2, 3 --------------------------------------------------------------- help texts

def test_help_texts_name_only_options_that_exist() -> None:
    """Every --option a help text mentions is the command's own, one of the command a
    backtick span names (`adn-edge export --segments`), or another program's."""
    commands = click_commands()
    wrong = []
    for name, cmd in commands.items():
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        for text in texts:
            for m in re.finditer(r"--[a-z][\w-]*", text):
                opt = m.group(0)
                if opt in OTHER_PROGRAMS or opt in options_of(cmd):
                    continue
                before = text[:m.start()]
                span = before[before.rfind("`") + 1:] if before.count("`") % 2 else None
                other = re.match(r"(?:adn-edge )?([a-z]+)", span or "")
                if other and other.group(1) in commands and opt in options_of(commands[other.group(1)]):
                    continue
                wrong.append(f"{name}: {opt} in {text!r}")
    assert not wrong, wrong


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_flags_without_a_value(command, capsys) -> None:
    code, out, _ = run_cli(([command] if command else []) + ["--help"], capsys)
    assert code == 0 and "--help" in out
    assert "<bool>" not in out, out
    if command not in (None, "demo"):
        assert re.search(r"--json\s{2,}\S", out), out  # the flag, then its help: no type between


def test_boolean_options_are_flags() -> None:
    for name, cmd in click_commands().items():
        for p in cmd.params:
            if getattr(p, "type", None) is not None and p.type.name == "boolean":
                assert p.is_flag, (name, p.opts)


# 4 ----------------------------------------------------------- output for pipes

def test_tables_for_a_pipe_keep_long_names_and_one_line_titles(capsys) -> None:
    name = "resnet_tiny_seg0_full." + "x" * 150 + ".onnx"
    title = "a title longer than the table below it, which once wrapped at the table's width " * 2
    output.table(title.strip(), ["part", "full"], [(0, name)])
    out = capsys.readouterr().out
    assert title.strip() in out.splitlines()
    assert name in out and "…" not in out


def test_subnets_piped_title_is_one_line(capsys) -> None:
    code, out, _ = run_cli(["subnets", "--arch", "resnet50"], capsys)
    assert code == 0
    assert out.splitlines()[0] == ("resnet50: 16 sub-networks (GMACs = conv/linear/attention "
                                   "multiply-accumulates, batch 1)")
    assert "…" not in out


def test_lines_for_a_pipe_are_not_wrapped(capsys) -> None:
    long = "wrote " + ", ".join(f"/some/long/path/number/{i}/model.safetensors" for i in range(6))
    output.console().print(long)
    assert capsys.readouterr().out == long + "\n"


# 5 --------------------------------------------------------------------- info

def test_info_on_checkpoints_is_worded_and_guesses_the_arch_as_export_does(tmp_path, capsys) -> None:
    plain = tmp_path / "plain.pth"
    torch.save(random_state_dict(create_model("resnet_tiny"), seed=1), plain)
    code, out, err = run_cli(["info", plain], capsys)
    assert code == 0, err
    assert "arch: resnet_tiny (guessed" in out
    assert "None" not in out and "{" not in out and "[" not in out, out
    code, out, _ = run_cli(["info", plain, "--json"], capsys)
    doc = json.loads(out)
    assert (doc["arch"], doc["arch_source"]) == ("resnet_tiny", "guessed")

    from adn_edge import checkpoint

    ours = checkpoint.save(create_model("resnet_tiny"), tmp_path / "ours.safetensors")
    code, out, _ = run_cli(["info", ours], capsys)
    assert "arch: resnet_tiny (recorded in the file)" in out and "mean: 0.5, 0.5, 0.5" in out
    assert "None" not in out and "{" not in out and "[" not in out, out


def test_info_says_when_the_arch_cannot_be_told(tmp_path, capsys) -> None:
    """Weights of no registered architecture: export cannot tell it either."""
    p = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3), "fc.weight": torch.zeros(10, 4)}, p)
    code, out, _ = run_cli(["info", p], capsys)
    assert code == 0 and "arch: unknown" in out and "--arch" in out and "None" not in out


def test_info_on_a_directory_is_worded_and_ordered_like_other_tables(tiny_dir, capsys) -> None:
    from adn_edge.modeldir import manifest

    code, out, err = run_cli(["info", tiny_dir], capsys)
    assert code == 0, err
    assert "None" not in out and "{" not in out and "[" not in out, out
    assert "input Nx3x32x32" in out and "source: in-memory weights (no checkpoint)" in out
    shown = [line.split("│")[1].strip() for line in out.splitlines() if re.match(r"│ [01]{4} ", line)]
    expected = manifest.resolve_codes(manifest.load(tiny_dir), "all")
    assert shown == expected == ["1111", "1010", "0000"]
    assert [s["code"] for s in json.loads(run_cli(["info", tiny_dir, "--json"], capsys)[1])["subnets"]] == expected


def test_onnx_info_shapes_and_metadata(tiny_dir, capsys) -> None:
    code, out, _ = run_cli(["info", tiny_dir / "resnet_tiny_1010.onnx"], capsys)
    assert code == 0 and "inputs: input FLOAT Nx3x32x32" in out and "  adn.skip_cfg: FTFT" in out
    assert "{" not in out and "[" not in out


# 6 -------------------------------------------------------------------- GMACs

def test_subnets_gmacs_rounded_and_ordered_like_export(capsys) -> None:
    from adn_edge.flops import arch_costs

    code, out, _ = run_cli(["subnets", "--arch", "resnet50", "--json"], capsys)
    rows = json.loads(out)["subnets"]
    costs = arch_costs("resnet50")
    for r in rows:
        assert r["gmacs"] == round(r["macs"] / 1e9, 3) and r["macs"] == costs[r["code"]].macs
    export_order = subnet.expand("all", 4, "resnet50", cost=lambda c: costs[c].macs)
    assert [r["code"] for r in rows] == export_order


def test_gmacs_keep_three_significant_digits() -> None:
    assert output.gmacs(4.0892) == "4.089" and output.gmacs(17.5638) == "17.564"
    assert output.gmacs(0.035047) == "0.0350" and output.gmacs(0.016172) == "0.0162"
    assert output.round_gmacs(0.030328) == 0.0303 and output.gmacs(None) == "-"


# 7 -------------------------------------------------------------------- train

@pytest.mark.usefixtures("one_thread")
def test_train_prints_a_line_per_epoch_when_not_a_terminal(tmp_path, capsys) -> None:
    code, out, err = run_cli(["train", "--epochs", "2", "--train-fraction", "0.05", "--no-final-eval",
                              "--out", tmp_path / "run", "--batch-size", "32"], capsys)
    assert code == 0, err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/2", "2/2"], err
    assert "loss" in epochs[0] and out.startswith("wrote ") and len(out.splitlines()) == 1


# 8 -------------------------------------------------------------------- build

def test_build_calib_builtin_says_how_to_calibrate_on_it(tiny_dir, capsys) -> None:
    code, _, err = run_cli(["build", tiny_dir, "--precision", "int8", "--calib", "builtin"], capsys)
    assert code == 2 and "Traceback" not in err
    text = " ".join(err.split())
    assert "built-in digits" in text and f"adn-edge quantize {tiny_dir} --calib builtin" in text
    code, _, err = run_cli(["build", tiny_dir, "--precision", "int8", "--calib", "builtin:nope"], capsys)
    assert code == 2 and "Unknown built-in dataset" in err


def test_workstation_command_without_torch_is_explained_not_a_bug():
    """A runtime-only install (no torch) asking for `subnets` gets exit 2 and what to do."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from adn_edge.cli.app import main\n"
            "main(['subnets', '--arch', 'resnet50'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs torch" in proc.stderr and "unexpected error" not in proc.stderr
    assert "Traceback" not in proc.stderr
