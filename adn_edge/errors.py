"""The one user-facing error type.

Everything a user can get wrong (a bad code, a missing file, a checkpoint of another
architecture) raises :class:`AdnError`. The CLI prints its message as one paragraph
and exits with code 2; any other exception is a bug and exits with 1. Library users
catch ``AdnError`` to tell their mistakes from ours.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class AdnError(Exception):
    """A problem with the user's input, explained so that they can fix it.

    ``message`` says what was wrong; ``hint`` (optional) says how to fix it.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message.strip()
        self.hint = hint.strip() if hint else None
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class AdnFailure(Exception):
    """Valid input, but the work failed in a way we can explain (exit 1).

    E.g. an exported graph disagrees with PyTorch, or TensorRT refused to build. The
    CLI prints the message without a traceback; unlike :class:`AdnError` it is not
    something the user can fix by changing their command.
    """

    exit_code = EXIT_FAILURE


class ParityError(AdnFailure):
    """An exported graph disagrees with PyTorch beyond tolerance (our bug or a broken
    toolchain, not the user's input); the graph is not written."""


class BuildFailure(AdnFailure):
    """TensorRT could not build, or built something we refuse to publish (exit 1).

    Not an :class:`AdnError`: the user's input was valid; the toolchain or the GPU
    disagreed. The message still says what happened in one paragraph.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        self.message = message.strip()
        super().__init__(self.message)

    def paragraph(self) -> str:
        return self.message
