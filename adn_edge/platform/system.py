"""Reading this machine: files under a root, read-only commands, and the Jetson facts
the parsers of :mod:`~adn_edge.platform.jetson` make of them; never raises.

Files are read under ``root`` and commands run through a :data:`Runner`, so tests fake
a Jetson with a directory tree and a dict of recorded outputs. Only read-only commands
are ever run (``nvpmodel -q``, ``jetson_clocks --show``, ``nvidia-smi``, ``dpkg-query``,
``nvcc --version``): a diagnosis must not change the machine it diagnoses.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adn_edge.platform import jetson

Runner = Callable[[Sequence[str]], "str | None"]
"""Runs a command; returns its stdout, or None if it is missing or failed."""


def _run(argv: Sequence[str], timeout_s: float, any_status: bool) -> str | None:
    if not argv or shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    if any_status:
        return (done.stdout or "") + (done.stderr or "")
    return done.stdout if done.returncode == 0 else None


def run_command(argv: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """The default :data:`Runner`: stdout of ``argv`` when it exits 0, else None."""
    return _run(argv, timeout_s, any_status=False)


def run_any(argv: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """stdout and stderr of ``argv`` whatever its exit status (tools such as
    ``jetson_clocks`` print why they refused and exit 1); None when it cannot run."""
    return _run(argv, timeout_s, any_status=True)


def read_text(root: Path, rel: str) -> str | None:
    try:
        return (Path(root) / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


@dataclass(frozen=True)
class JetsonRelease:
    """Which L4T this machine runs and what that release ships, and how it was found."""

    l4t: str
    source: str
    release: jetson.Release | None

    @property
    def jetpack(self) -> str | None:
        return self.release.jetpack if self.release else None


def jetson_release(root: Path = Path("/"), run: Runner = run_command) -> JetsonRelease | None:
    """``/etc/nv_tegra_release`` first, then the ``nvidia-l4t-core`` package (containers
    often lack the file); None on anything that is not a Jetson."""
    parsed = jetson.parse_nv_tegra_release(read_text(root, "etc/nv_tegra_release"))
    if parsed is not None:
        return JetsonRelease(parsed.version, "/etc/nv_tegra_release", parsed.release)
    l4t = jetson.l4t_from_packages(run(["dpkg-query", "-W", "nvidia-l4t-core"]))
    if l4t is not None:
        return JetsonRelease(l4t, "dpkg-query nvidia-l4t-core", jetson.release_for_l4t(l4t))
    return None


def cuda_toolkit_version(root: Path = Path("/"), run: Runner = run_command) -> tuple[str | None, str | None]:
    """(CUDA version, where it was read): ``/usr/local/cuda/version.json``, then ``nvcc``."""
    version = jetson.parse_cuda_version_json(read_text(root, "usr/local/cuda/version.json"))
    if version:
        return version, "/usr/local/cuda/version.json"
    for nvcc in ("nvcc", "/usr/local/cuda/bin/nvcc"):
        version = jetson.parse_nvcc_version(run([nvcc, "--version"]))
        if version:
            return version, "nvcc --version"
    return None, None
