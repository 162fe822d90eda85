"""Shared terminal output: errors, JSON, tables, progress bars.

Progress bars go to stderr and only on a terminal, so ``--json`` output on stdout
stays machine-readable. Under ``--json`` that holds for failures too: a script that
parses stdout gets one object ``{"error": {"message", "hint", "exit_code", "type"}}``
instead of nothing (the human paragraph still goes to stderr, the exit code is still
2 or 1). JSON is strict (no ``NaN``, :func:`adn_edge.fileio.to_json`). Text for a pipe
or a file is never wrapped or truncated (a console would otherwise assume 80 columns
and cut file names): see :func:`console`.
"""

from __future__ import annotations

import math
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


NOT_A_TERMINAL_WIDTH = 10_000
"""Columns of a console whose stream is not a terminal: wide enough that no table
column is truncated and no line is wrapped (tables are only as wide as their content)."""


def is_terminal(stderr: bool = False) -> bool:
    """Whether stdout (or stderr) is a terminal; a pipe, a file or a closed stream is not."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr). On a terminal it wraps to the terminal's
    width; otherwise (``| cat``, ``> file``) lines are written whole, one per line, and
    tables at their natural width, so names and titles arrive complete."""
    from rich.console import Console

    if is_terminal(stderr):
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=NOT_A_TERMINAL_WIDTH, soft_wrap=True)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table on stdout under a one-line title. Cells are plain text (no markup), and
    long ones fold onto more lines on a narrow terminal instead of being cut."""
    from rich.table import Table
    from rich.text import Text

    c = console()
    # The title is its own line: a table's title would wrap at the table's width.
    c.print(Text(title, style="table.title"))
    t = Table()
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for r in rows:
        t.add_row(*[Text(str(x)) for x in r])
    c.print(t)


def gmacs(value: float | None) -> str:
    """GMACs for people: three decimals, and three significant digits below 0.1
    (``4.089``, ``0.0256``), so that neighbours in a table stay distinguishable."""
    if value is None:
        return "-"
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    return f"{v:.{max(3, 2 - math.floor(math.log10(abs(v))))}f}"


def round_gmacs(value: float) -> float:
    """The value :func:`gmacs` shows, as a number (for ``--json``)."""
    return float(gmacs(value))


def progress(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr (silent when stderr is not a terminal)."""
    if not is_terminal(stderr=True):
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=len(items))
        for item in items:
            yield item
            prog.advance(task)
