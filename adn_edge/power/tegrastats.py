"""Jetson power from ``tegrastats``: the subprocess sampler.

``tegrastats`` is the one power meter every JetPack ships. The sampler stamps each
line when it is read (lines carry at most a second-resolution date) and owns the
subprocess's whole life: terminate, then kill, on stop, error or Ctrl-C. What a line
means, across every JetPack's format, is :mod:`adn_edge.power.tegrastats_format`.

Its output is read in fixed-size chunks and split into lines here, never with
``readline``: a tool printing one endless line made ``readline`` grow without end
(3.6 GB before the issue was filed). A line longer than :data:`MAX_LINE_BYTES` is
discarded as it streams past and counted as a rejected sample, like a reading with
implausible values; too many of either fail the run (:mod:`adn_edge.power.base`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import weakref
from typing import Any, ClassVar

from adn_edge.errors import AdnError, PowerSourceError
from adn_edge.power.base import PowerSource
from adn_edge.power.energy import PowerSample

from adn_edge.power.tegrastats_format import Implausible, ParseFailure, TegrastatsReading, parse_line

MAX_LINE_BYTES = 64 * 1024
"""Longest line accepted. Real lines are under 1 KB (every core, engine and rail of an
AGX Orin); anything near this is not tegrastats output."""
READ_CHUNK = 64 * 1024
STDERR_TAIL_BYTES = 4096
"""How much of the tool's error output is kept for the error message."""

MISSING_HINT = (
    "tegrastats ships with JetPack in the nvidia-l4t-tools package and lives at "
    "/usr/bin/tegrastats; install it with `sudo apt install nvidia-l4t-tools`, put it on "
    "PATH, or use --power none to measure latency only. On some boards reading every "
    "rail needs root: run the bench with sudo."
)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The tool runs in its own session, so its process group id is its pid: signalling
    # the group also reaches anything a wrapper script started.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _reap(proc: subprocess.Popen[bytes], term_timeout_s: float) -> None:
    """Terminate, then kill, then wait: the process is gone (and reaped) afterwards."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=term_timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    else:
        proc.wait()


class TegrastatsSource(PowerSource):
    """Runs ``tegrastats --interval MS`` and turns its lines into :class:`PowerSample`.

    ``executable`` defaults to ``tegrastats`` found on PATH. ``line_buffered`` wraps
    the command in ``stdbuf -oL`` when available, because a C program writing to a
    pipe may buffer several lines and ruin the arrival stamps.
    """

    name: ClassVar[str] = "tegrastats"

    def __init__(self, interval_ms: float | None = 50, executable: str | None = None, *,
                 line_buffered: bool = True, first_line_timeout_s: float | None = None,
                 term_timeout_s: float = 2.0) -> None:
        interval_ms = 50 if interval_ms is None else interval_ms
        super().__init__(interval_ms)
        self.executable = self._find(executable)
        self.line_buffered = line_buffered
        self.first_line_timeout_s = (first_line_timeout_s if first_line_timeout_s is not None
                                     else 3.0 + 10 * float(interval_ms) / 1000)
        self.term_timeout_s = term_timeout_s
        self.readings = 0
        self.failures: list[ParseFailure] = []
        """The first few unparsable lines, for the report."""
        self.failure_count = 0
        self.overlong_lines = 0
        self.discarded_bytes = 0
        """Bytes of over-long lines thrown away unread."""
        self.board: TegrastatsReading | None = None
        """The first reading with power: which rails this board has."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_pid: int | None = None
        self._threads: list[threading.Thread] = []
        self._stderr = bytearray()
        self._stopping = False
        self._exit_code: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @staticmethod
    def _find(executable: str | None) -> str:
        name = executable or "tegrastats"
        found = shutil.which(name)
        if found is None:
            where = "on PATH" if os.sep not in name else "at that path"
            raise AdnError(f"--power tegrastats needs the `tegrastats` tool, which was not found {where} "
                           f"({name!r}).", MISSING_HINT)
        return found

    @property
    def pid(self) -> int | None:
        """The tool's process id (kept after stop, so callers can check it is gone)."""
        return self._proc.pid if self._proc else self._last_pid

    def command(self) -> list[str]:
        interval = str(max(1, int(round(float(self.interval_ms or 50)))))
        cmd = [self.executable, "--interval", interval]
        stdbuf = shutil.which("stdbuf") if self.line_buffered else None
        return [stdbuf, "-oL", *cmd] if stdbuf else cmd

    # -- life cycle -------------------------------------------------------------
    def start(self) -> None:
        if self._proc is not None:
            return
        self.executable = self._find(self.executable)  # may have vanished since construction
        self._stopping = False
        self._exit_code = None
        try:
            self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, bufsize=0, start_new_session=True)
        except OSError as exc:
            raise AdnError(f"tegrastats at {self.executable!r} could not be started: {exc.strerror or exc}.",
                           MISSING_HINT) from None
        self._last_pid = self._proc.pid
        self._stderr = bytearray()
        # Reaps the process if the owner forgets stop() or the interpreter exits.
        self._finalizer = weakref.finalize(self, _reap, self._proc, self.term_timeout_s)
        self._running = True
        self._threads = [threading.Thread(target=self._read_stdout, args=(self._proc,),
                                          name="tegrastats-stdout", daemon=True),
                         threading.Thread(target=self._read_stderr, args=(self._proc,),
                                          name="tegrastats-stderr", daemon=True)]
        for th in self._threads:
            th.start()
        try:
            self._wait_first()
        except BaseException:
            self._shutdown()
            raise

    def _seen(self) -> int:
        return self.readings + self.failure_count + self.rejected

    def _wait_first(self) -> None:
        deadline = time.perf_counter() + self.first_line_timeout_s
        with self._cond:
            while not self._samples and self._running and self._seen() < 3:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            if self._samples:
                return
        if not self._running:  # stdout closed: it exited (or is exiting)
            self._wait_exit()
            self._shutdown()
            raise self._died("before printing a reading")
        if self.rejected and not self.readings:
            raise PowerSourceError(
                f"tegrastats printed only implausible or over-long readings ({self.rejected} so far; first: "
                f"{self.rejections[0]}), so energy cannot be measured.",
                "Run `tegrastats --interval 50` by hand and check its output; use --power none to measure "
                "latency only.")
        if self._seen():
            example = self.failures[0].line if self.failures else ""
            raise PowerSourceError(
                "tegrastats runs but its lines carry no power rails, so energy cannot be measured"
                + (f" (first line: {example[:200]!r})." if example else "."),
                "Some boards only report rails to root: run the bench with sudo, or use --power none.")
        raise PowerSourceError(
            f"tegrastats printed nothing within {self.first_line_timeout_s:.1f} s of starting.",
            "Check that `tegrastats --interval 50` prints lines when run by hand (it may need sudo), "
            "or use --power none.")

    def _wait_exit(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=self.term_timeout_s)
            except subprocess.TimeoutExpired:
                pass

    def _died_on_its_own(self) -> bool:
        proc = self._proc
        return proc is not None and not self._stopping and (proc.poll() is not None or not self._running)

    def stop(self) -> None:
        """Stop tegrastats (terminate, then kill) and join the readers. Raises
        :class:`PowerSourceError` afterwards if it had died on its own while in use."""
        if self._proc is None:
            return
        died = self._died_on_its_own()
        if died:
            self._wait_exit()
        self._shutdown()
        if died:
            raise self._died("while the benchmark was running")
        self._check_rejections()

    def check(self) -> None:
        if self._died_on_its_own():
            self._wait_exit()
            self._shutdown()
            raise self._died("while the benchmark was running")
        self._check_rejections()

    def _shutdown(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        try:
            _reap(proc, self.term_timeout_s)
        finally:
            self._running = False
            for th in self._threads:
                if th is not threading.current_thread():
                    th.join(timeout=5.0)
            if not any(th.is_alive() for th in self._threads):
                # Closing a pipe another thread still reads could block; leak it instead.
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        try:
                            stream.close()
                        except OSError:
                            pass
            self._exit_code = proc.returncode
            if self._finalizer is not None and proc.returncode is not None:
                self._finalizer.detach()  # kept if a second Ctrl-C cut the reaping short
            self._proc = None
            with self._cond:
                self._cond.notify_all()

    def _died(self, when: str) -> PowerSourceError:
        text = bytes(self._stderr).decode("utf-8", errors="replace")
        err = " | ".join(line.strip() for line in text.splitlines() if line.strip())
        detail = f" Its error output: {err[-400:]}" if err else ""
        return PowerSourceError(
            f"tegrastats exited {when} (exit code {self._exit_code}).{detail}",
            "Run `tegrastats --interval 50` by hand to see why; some boards need sudo for the power "
            "rails. Use --power none to measure latency only.")

    # -- reader threads ----------------------------------------------------------
    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = bytearray()
        skipping = False  # inside a line already found too long: drop until its newline
        try:
            while chunk := os.read(fd, READ_CHUNK):
                t = time.perf_counter()  # stamp first: parsing must not delay the clock
                start = 0
                while True:
                    end = chunk.find(b"\n", start)
                    piece = chunk[start:] if end < 0 else chunk[start:end]
                    if skipping:
                        self.discarded_bytes += len(piece)
                    elif len(pending) + len(piece) > MAX_LINE_BYTES:
                        self.discarded_bytes += len(pending) + len(piece)
                        pending.clear()
                        skipping = True
                        self._overlong()
                    else:
                        pending += piece
                    if end < 0:
                        break
                    if not skipping:
                        self._handle(pending.decode("utf-8", errors="replace"), t)
                    pending.clear()
                    skipping = False
                    start = end + 1
            if pending and not skipping:  # a last line without its newline
                self._handle(pending.decode("utf-8", errors="replace"), time.perf_counter())
        except (OSError, ValueError):
            pass  # pipe closed under us during shutdown
        finally:
            with self._cond:
                if not self._stopping:
                    self._running = False  # died on its own; check()/stop() report it
                self._cond.notify_all()

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        try:
            while chunk := os.read(fd, READ_CHUNK):
                self._stderr += chunk
                del self._stderr[:-STDERR_TAIL_BYTES]  # only the tail: it may print forever too
        except (OSError, ValueError):
            pass

    def _overlong(self) -> None:
        with self._cond:
            self.overlong_lines += 1
        self._reject(f"a line longer than {MAX_LINE_BYTES // 1024} KiB (discarded unread)")

    def _handle(self, raw: str, t: float) -> None:
        if not raw.strip():
            return
        reading = parse_line(raw)
        if isinstance(reading, Implausible):
            self._reject(reading.reason)
            return
        if isinstance(reading, ParseFailure):
            with self._cond:
                self.failure_count += 1
                if len(self.failures) < 10:
                    self.failures.append(reading)
                self._cond.notify_all()
            return
        with self._cond:
            self.readings += 1
            if reading.module_w is None:
                self._cond.notify_all()
                return
            if self.board is None:
                self.board = reading
        self._add(PowerSample(t=t, module_w=reading.module_w, cpu_gpu_w=reading.cpu_gpu_w,
                              rails_w=reading.rails_w))

    # -- reporting -------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        board = self.board
        samples = self.samples
        gaps = [b.t - a.t for a, b in zip(samples, samples[1:])]
        observed = sorted(gaps)[len(gaps) // 2] * 1000 if gaps else None
        notes = []
        if board is not None and board.module_summed:
            notes.append(f"this board has no module-input rail: module power is the sum of {board.module_rail} "
                         "(NC channels excluded)")
        if board is not None and board.cpu_gpu_rail:
            notes.append(f"cpu_gpu_w is {board.cpu_gpu_rail}; no Jetson rail measures the GPU alone")
        if gaps and self.interval_ms and sum(g < 0.2 * self.interval_ms / 1000 for g in gaps) > len(gaps) / 4:
            notes.append("lines arrived in bursts (output buffering?): per-sample timing is unreliable")
        return {
            "source": "tegrastats",
            "rail": board.module_rail if board else None,
            "module_summed": board.module_summed if board else None,
            "cpu_gpu_rail": board.cpu_gpu_rail if board else None,
            "interval_ms": self.interval_ms,
            "observed_interval_ms": round(observed, 3) if observed is not None else None,
            "executable": self.executable,
            "readings": self.readings,
            "parse_failures": self.failure_count,
            "rejected_samples": self.rejected,
            "rejections": list(self.rejections),
            "overlong_lines": self.overlong_lines,
            "discarded_bytes": self.discarded_bytes,
            "notes": notes,
        }
