"""Shared terminal output: errors, JSON, tables, progress bars.

Progress bars go to stderr and only on a terminal, so ``--json`` output on stdout
stays machine-readable. Under ``--json`` that holds for failures too: a script that
parses stdout gets one object ``{"error": {"message", "hint", "exit_code", "type"}}``
instead of nothing (the human paragraph still goes to stderr, the exit code is still
2 or 1). JSON is strict (no ``NaN``, :func:`adn_edge.fileio.to_json`).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from adn_edge.errors import AdnProblem
from adn_edge.fileio import to_json

T = TypeVar("T")


def wants_json(argv: Sequence[str] | None = None) -> bool:
    """Whether the command line asks for ``--json`` (before a ``--``), known before the
    command runs, so that even a usage error can answer in JSON."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if "--" in args:
        args = args[:args.index("--")]
    return "--json" in args


def json_error(message: str, hint: str | None, exit_code: int, kind: str) -> None:
    """The one JSON object a failed ``--json`` command prints on stdout."""
    doc = {"error": {"message": message, "hint": hint, "exit_code": exit_code, "type": kind}}
    sys.stdout.write(to_json(doc, default=str) + "\n")
    sys.stdout.flush()


def fail(exc: AdnProblem, as_json: bool = False) -> NoReturn:
    text = textwrap.fill("error: " + exc.paragraph(), width=100, break_long_words=False, break_on_hyphens=False)
    sys.stderr.write(text + "\n")
    if as_json:
        json_error(exc.message, exc.hint, exc.exit_code, type(exc).__name__)
    sys.exit(exc.exit_code)


def print_json(obj: Any) -> None:
    sys.stdout.write(to_json(obj, default=str) + "\n")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console().print(t)


def progress(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr (silent when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=len(items))
        for item in items:
            yield item
            prog.advance(task)
