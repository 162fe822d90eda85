"""One error hierarchy: input problems exit 2, explained failures exit 1.

Everything the CLI can explain is an :class:`AdnProblem`, a message (what happened)
and an optional hint (what to do), printed as one paragraph without a traceback:

* :class:`AdnError` (exit 2): the user's input was wrong (a bad code, a missing
  file, a checkpoint of another architecture); changing the command fixes it.
* :class:`AdnFailure` (exit 1): the input was valid but the work failed in a way we
  can explain: an exported graph disagrees with PyTorch (:class:`ParityError`),
  TensorRT refused to build (:class:`BuildFailure`), a power meter died mid-run
  (:class:`PowerSourceError`).

Any other exception is a bug: the CLI prints a short summary and exits 1. Library
users catch ``AdnError`` to tell their mistakes from ours, or ``AdnProblem`` for both.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class AdnProblem(Exception):
    """A problem adn-edge can explain: ``message`` says what, ``hint`` (optional) how to fix it."""

    exit_code: ClassVar[int] = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message.strip()
        self.hint = hint.strip() if hint else None
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class AdnError(AdnProblem):
    """A problem with the user's input, explained so that they can fix it (exit 2)."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class AdnFailure(AdnProblem):
    """Valid input, but the work failed in a way we can explain (exit 1); not something
    the user fixes by changing their command."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class ParityError(AdnFailure):
    """An exported graph disagrees with PyTorch beyond tolerance (our bug or a broken
    toolchain, not the user's input); the graph is not written."""


class BuildFailure(AdnFailure):
    """TensorRT could not build, or built something we refuse to publish."""


class PowerSourceError(AdnFailure):
    """The power meter was there but failed while in use (it died, printed nothing, ...)."""
