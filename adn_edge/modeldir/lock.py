"""One writer at a time per model directory: an advisory lock around every command that writes.

Two ``export``s into one directory used to both exit 0 with half the sub-networks
missing from the manifest: each saved its whole in-memory copy. A writer (export,
quantize, build, bench, eval) now holds :func:`writing` for its whole run and reads
the manifest *inside* it, so it extends what the previous writer left instead of
overwriting it. A second writer waits, saying once whom it waits for, and gives up
with an :class:`~adn_edge.errors.AdnError` (exit 2) after ``ADN_EDGE_LOCK_TIMEOUT``
seconds (default 600).

The lock is ``flock`` on ``<dir>/.adn-edge.lock`` (POSIX: Linux, Jetson, macOS): the
kernel drops it when the process dies, even by ``kill -9``, so a crash never leaves
the directory locked. The file stays (removing it would let two writers lock two
different inodes). Re-entrant within a process (the demo exports, evaluates and
benches under one lock). Readers (``EngineSwitcher.open``) take no lock: they verify
every file against its sha256 instead. Where ``fcntl`` does not exist (Windows) the
lock is a no-op and says so in its docstring only: adn-edge's devices are Linux.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from adn_edge.errors import AdnError
from adn_edge.modeldir.names import LOCK

DEFAULT_TIMEOUT_S = 600.0
POLL_S = 0.1

_held: dict[str, tuple[int, int]] = {}
"""Locks this process holds: real path -> (file descriptor, depth)."""
_guard = threading.RLock()


def _timeout() -> float:
    raw = os.environ.get("ADN_EDGE_LOCK_TIMEOUT")
    try:
        value = float(raw) if raw is not None else DEFAULT_TIMEOUT_S
    except ValueError:
        raise AdnError(f"ADN_EDGE_LOCK_TIMEOUT={raw!r} is not a number of seconds.") from None
    if not value >= 0:  # also refuses NaN
        raise AdnError(f"ADN_EDGE_LOCK_TIMEOUT={raw!r} must be zero or more seconds.")
    return value


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        return f"`adn-edge {info.get('command', '?')}` (pid {info.get('pid', '?')})"
    except (OSError, ValueError):
        return "another adn-edge process"


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


@contextlib.contextmanager
def writing(directory: str | os.PathLike[str], command: str, *, timeout_s: float | None = None,
            notify: Callable[[str], None] = _say) -> Iterator[Path]:
    """Hold the directory's writer lock (created with the directory if need be); yields its path."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield Path(directory)
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return
    limit = _timeout() if timeout_s is None else timeout_s
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + limit
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    notify(f"waiting for {_holder(fd)} to finish writing {str(path)!r} ...")
                    waited = True
                if time.monotonic() >= deadline:
                    raise AdnError(
                        f"{str(path)!r} is being written by {_holder(fd)}; gave up after {limit:g} s.",
                        "Wait for it to finish and run the command again, or set ADN_EDGE_LOCK_TIMEOUT "
                        "(seconds) to wait longer.") from None
                time.sleep(POLL_S)
        record = json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        with _guard:
            _held[key] = (fd, 1)
        try:
            yield path
        finally:
            with _guard:
                del _held[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


P = ParamSpec("P")
R = TypeVar("R")


def locked(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function whose first argument is a model directory so that it runs
    under :func:`writing` (the directory must already hold a manifest: a clear error
    comes before the lock would create anything)."""

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            directory = Path(args[0] if args else kwargs["directory"])  # type: ignore[arg-type]
            from adn_edge.modeldir.manifest import load

            load(directory)
            with writing(directory, command):
                return fn(*args, **kwargs)

        return wrapper

    return deco
