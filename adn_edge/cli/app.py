"""The ``adn-edge`` command: a typer app whose commands are thin calls into the library.

Each command lives in its own module under ``adn_edge/cli/`` and registers itself
through :func:`command_modules`. Error policy (docs/cli.md): an
:class:`~adn_edge.errors.AdnProblem` prints one paragraph and exits with its code (2 for
an :class:`~adn_edge.errors.AdnError`, bad input; 1 for an explained
:class:`~adn_edge.errors.AdnFailure`); anything else is a bug, prints a short traceback
summary and exits 1.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from adn_edge.cli.output import fail, json_error, wants_json
from adn_edge.errors import EXIT_FAILURE, AdnProblem

COMMAND_MODULES = (
    "subnets", "export", "build", "bench", "eval", "train", "info", "demo", "quantize", "doctor",
)


def _flags_without_type(command: Any, ctx: Any) -> None:
    """Blank the type a flag shows in help: typer 0.29's rich help prints one after
    every option (``--json <bool>``), although a flag takes no value."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class AppGroup(TyperGroup):
    """The app's group: its own and every command's help list flags bare (``--json``)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _flags_without_type(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _flags_without_type(self, ctx)
        return super().format_help(ctx, formatter)


app = typer.Typer(
    name="adn-edge",
    cls=AppGroup,
    help="Adaptive Depth Networks on edge devices: export sub-networks to ONNX, build "
    "TensorRT engines, benchmark latency and energy, switch at run time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"adn_edge.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"adn_edge.cli.{name}":
                continue  # command not built yet
            raise
        mod.register(app)


_register_commands()


def _print_version(value: bool) -> None:
    # Eager: runs while the options are parsed, before click asks for a command, so
    # `adn-edge --version` alone prints the version (exit 0) instead of "Missing command".
    if value:
        from adn_edge import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       expose_value=False, help="Print the version and exit.")) -> None:
    pass


_WORKSTATION_ONLY = ("torch", "torchvision", "safetensors")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the exit-code policy (under ``--json``, failures
    also print one ``{"error": ...}`` object on stdout)."""
    as_json = wants_json(argv)
    try:
        # With standalone_mode=False click returns typer.Exit's code instead of exiting.
        rc = app(args=argv, standalone_mode=False)
    except AdnProblem as exc:
        fail(exc, as_json)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _WORKSTATION_ONLY:
            raise
        # A runtime-only install (a robot) asked for a workstation command.
        from adn_edge.errors import AdnError

        fail(AdnError(f"This command needs {exc.name.split('.')[0]}, which is not installed here (a runtime-only "
                      "install: `adn-edge info`, `bench`, `build` and `doctor` work without it).",
                      "Install PyTorch (`pip install torch==2.13.0` on a CPU workstation) or run this command on "
                      "the workstation."), as_json)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the bug path
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            # click's usage errors (typer vendors click, so match by shape, not class).
            exc.show()  # type: ignore[attr-defined]
            if as_json:
                json_error(exc.format_message(), None, exc.exit_code, type(exc).__name__)  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if os.environ.get("ADN_EDGE_DEBUG"):
            raise
        import traceback

        sys.stderr.write("adn-edge hit an unexpected error (a bug; set ADN_EDGE_DEBUG=1 for the full traceback):\n")
        sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        if as_json:
            json_error(f"{type(exc).__name__}: {exc}", "This is a bug in adn-edge; set ADN_EDGE_DEBUG=1 for the full "
                       "traceback.", EXIT_FAILURE, type(exc).__name__)
        sys.exit(getattr(exc, "exit_code", EXIT_FAILURE))
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
