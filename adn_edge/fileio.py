"""Atomic file writes, strict JSON, bounded reads of regular files, and hashing.

Nothing half-written is ever left behind: every artifact is written to a temporary
file in the destination directory and renamed into place, so a crash, Ctrl-C or a
failed verification leaves either the old file or no file. A ``kill -9`` cannot run
that cleanup, so temporary names carry the writer's host and PID, and the next
atomic write into the same folder removes the temporaries of writers that are gone
(:func:`remove_stale_temps`).

JSON is strict both ways: ``NaN``/``Infinity`` are not JSON (RFC 8259), other
readers (``jq``, browsers, Go) reject them, so a non-finite number is an error naming
where it is, on writing and on reading. Readers open regular files only and read a
bounded amount: a FIFO would block ``open`` forever, ``/dev/zero`` never ends, and a
manifest of gigabytes is not a manifest.

:func:`check_threads` lives here too, because every layer (CLI, bench, backends)
accepts a thread count and this is the one core module they may all import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from adn_edge.errors import AdnError, AdnFailure

MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest JSON file read (manifests, reports, eval results are kilobytes to a few MB)."""

STALE_TEMP_AGE_S = 3600.0
"""A temporary file whose writer cannot be checked (another host, an old-style name)
is stale after this long; one written by a dead process here is stale at once."""

THREADS_PER_CPU = 1
"""Intra-op threads beyond the machine's logical CPUs only oversubscribe the cores
(and ONNX Runtime given 100000 crashed), so the bound is the CPU count itself."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
"""Opening never waits: a FIFO opened for reading would block until a writer comes."""

_TEMP_RE = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
"""``.<dest name>.<host>-<pid>.<8 random>.tmp`` (and the older ``.<dest name>.<8 random>.tmp``)."""


def temp_host_tag() -> str:
    """Six hex digits naming this host in temporary names: a PID is only meaningful on
    the host (and PID namespace, which a container's own hostname usually marks) that
    issued it, so another machine's temporaries on a shared folder are judged by age."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or unknowable): not ours to judge dead
    return True


def remove_stale_temps(folder: str | os.PathLike[str], max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove temporary files of interrupted atomic writes in ``folder``; returns them.

    Stale means: written on this host by a process that no longer exists, or (name
    without a PID, or from another host) not modified for ``max_age_s``. Only names of
    the shape :func:`atomic_path` creates are considered, and only regular files.
    Best effort: a file another cleaner removed first, or one we may not remove, is
    skipped, because cleaning must never fail the write that triggered it.
    """
    removed: list[Path] = []
    host = temp_host_tag()
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if m.group("pid") is not None and m.group("host") == host:
                stale = not _pid_alive(int(m.group("pid")))
            else:
                stale = now - st.st_mtime > max_age_s
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    On any exception the temporary file is removed and ``dest`` is untouched. The
    temporary name carries this host and PID so that, if the process is killed before
    either happens, the next atomic write into the folder removes it.
    """
    dest = Path(dest)
    ensure_writable_dir(dest.parent)
    remove_stale_temps(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{temp_host_tag()}-{os.getpid()}.", suffix=".tmp",
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 - umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def _non_finite_path(obj: Any, path: str = "") -> str | None:
    """Where the first NaN/Infinity sits in ``obj``, as ``a.b[2].c`` (None if nowhere)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path or "(the value itself)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _non_finite_path(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _non_finite_path(v, f"{path}[{i}]")
            if found:
                return found
    return None


def to_json(obj: Any, *, indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> str:
    """``obj`` as strict JSON text (no ``NaN``/``Infinity``); a non-finite number is an
    :class:`AdnFailure` naming its key path, because it means a computation went wrong
    upstream, and writing it would make the file unreadable to strict parsers."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False, default=default)
    except ValueError as exc:
        where = _non_finite_path(obj)
        if where is None:
            raise
        raise AdnFailure(f"The value at {where} is not a finite number, and JSON has no NaN or Infinity; "
                         "nothing was written.",
                         "This is a measurement or computation that went wrong; rerun it, and report it if it "
                         "persists.") from exc


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    write_text(dest, to_json(obj) + "\n")


def open_regular(path: str | os.PathLike[str], what: str = "file", *, follow_links: bool = True,
                 hint: str = "Pass the path of a regular file.") -> BinaryIO:
    """``path`` opened for binary reading, refused with :class:`AdnError` unless it is a
    regular file (checked on the opened descriptor, so it is the file that will be
    read): a FIFO would block forever, a device such as ``/dev/zero`` never ends.
    ``follow_links=False`` also refuses a symbolic link (for a path already resolved,
    so that a link appearing since is not followed). A missing file raises
    :class:`FileNotFoundError` as ``open`` would, for callers that tell "missing" from
    "unreadable"."""
    fd = os.open(path, _OPEN_FLAGS | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0)))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device or socket"
            raise AdnError(f"The {what} {str(path)!r} is {kind}, not a regular file, so adn-edge does not read it.",
                           hint)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bounded(f: BinaryIO, path: str | os.PathLike[str], what: str, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        return f.read()
    data = f.read(max_bytes + 1)  # +1: a file that grew past its stat size is still caught
    if len(data) > max_bytes:
        raise AdnError(f"The {what} {str(path)!r} is larger than {max_bytes:,} bytes, which no such file is.",
                       "Check that the path names the right file.")
    return data


def read_bytes(path: str | os.PathLike[str], what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`), at most ``max_bytes``."""
    try:
        with open_regular(path, what) as f:
            return _read_bounded(f, path, what, max_bytes)
    except FileNotFoundError:
        raise AdnError(f"The {what} {str(path)!r} does not exist.") from None
    except OSError as exc:
        raise AdnError(f"The {what} {str(path)!r} cannot be read: {exc.strerror or exc}.") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | os.PathLike[str], what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file strictly: a regular file of at most ``max_bytes``, without the
    ``NaN``/``Infinity`` literals Python's own writer emits by default."""
    data = read_bytes(path, what, max_bytes)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise AdnError(f"The {what} {str(path)!r} cannot be read: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise AdnError(
            f"The {what} {str(path)!r} is not valid JSON ({exc}); it may be truncated or edited by hand."
        ) from None
    except ValueError as exc:  # from _refuse_constant
        raise AdnError(f"The {what} {str(path)!r} is not valid JSON: {exc} (NaN and Infinity are not JSON).",
                       "Rewrite it with the command that produced it.") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file (a FIFO or device is refused with AdnError; a
    missing file raises FileNotFoundError, which callers report in their own terms)."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_threads(value: Any, what: str = "--threads", *, allow_zero: bool = False) -> int | None:
    """A thread count checked against this machine: an int in 1..cpu_count (0 too when
    ``allow_zero``: the library's default). None passes (not given). Every option that
    sizes a thread pool goes through here, so none can ask for 100000 threads."""
    if value is None:
        return None
    cpus = os.cpu_count() or 1
    limit = cpus * THREADS_PER_CPU
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= limit:
        default = " (0: the library's default)" if allow_zero else ""
        raise AdnError(f"{what} must be a whole number from {low} to {limit}{default}, not {value!r}: this machine "
                       f"has {cpus} logical CPUs, and more threads than CPUs only compete for them.",
                       f"Use {what} {min(limit, 4)}, or leave it out for the default.")
    return value


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be created in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AdnError(f"The output path {str(path)!r} exists and is not a directory.",
                       "Choose another --out directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AdnError(f"The output directory {str(path)!r} cannot be created: {exc.strerror}.",
                       "Choose a directory you can write to with --out.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AdnError(f"The output directory {str(path)!r} is not writable.",
                       "Choose a directory you can write to with --out, or fix its permissions.")
    return path
