"""Atomic file writes and hashing.

Nothing half-written is ever left behind: every artifact is written to a temporary
file in the destination directory and renamed into place, so a crash, Ctrl-C or a
failed verification leaves either the old file or no file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adn_edge.errors import AdnError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    On any exception the temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    ensure_writable_dir(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
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


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdnError(f"The {what} {str(path)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AdnError(f"The {what} {str(path)!r} cannot be read: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise AdnError(
            f"The {what} {str(path)!r} is not valid JSON ({exc}); it may be truncated or edited by hand."
        ) from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
