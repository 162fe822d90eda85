"""Shared terminal output: errors, JSON, tables, progress bars.

Progress bars go to stderr and only on a terminal, so ``--json`` output on stdout
stays machine-readable.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from adn_edge.errors import AdnProblem

T = TypeVar("T")


def fail(exc: AdnProblem) -> NoReturn:
    text = textwrap.fill("error: " + exc.paragraph(), width=100, break_long_words=False, break_on_hyphens=False)
    sys.stderr.write(text + "\n")
    sys.exit(exc.exit_code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


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
